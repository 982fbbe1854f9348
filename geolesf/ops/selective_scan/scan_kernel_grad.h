/* Channel-blocked backward of the selective scan (the training path's gradients). Not a header
   of its own: #included by scan_kernel.c once per precision after scan_kernel_infer.h (same
   REAL / GL_FN / GL_S macros and GL_CB). Hence no include guard.

   Same blocking as the forward (scan_kernel_infer.h): GL_CB channels of one group at a time,
   their states h[n][j] and adjoints lam[n][j] as GL_CB-wide lane vectors, B[t,n] and C[t,n]
   broadcast. Per block: recompute dt, the decays a[t] and the states h[t] into scratch, then run
   the adjoint backwards in time. dB and dC (shared by the group's channels) are accumulated
   lane-wise over all blocks of the group and summed across lanes once per group, so there is
   no horizontal sum inside the time loop.

   Layouts: u, delta, gy, du, ddelta contiguous (batch, K*D, L); B, C read through strides
   (batch, group, state, time); dB, dC written contiguous (batch, K, N, L), every element
   (no zeroing needed); A2 = A*log2(e) (K*D, N). dA (natural units of A), dD and dbias are
   added to this part's accumulators. Returns 0, or 1 when scratch cannot be allocated. */

static inline __attribute__((always_inline)) void GL_FN(grad_block)(
    const REAL* dts, const REAL* us, const REAL* gys, const REAL* sig, const REAL* Bs, const REAL* Cs,
    const REAL* At, const REAL* Dv, REAL* a, REAL* h, REAL* dBl, REAL* dCl, REAL* lam, REAL* dAl,
    const REAL* zero, REAL* dus, REAL* dds, REAL* sums, int64_t L, const int64_t N)
{
#if GL_FUSED_AVX512
    if (N == 16) {  /* float, 16 lanes: the register-resident block of scan_kernel_avx512.h */
        gl_grad_block16(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, dAl, dus, dds, sums, L);
        return;
    }
#endif
    const REAL ln2 = (REAL)0.69314718055994530942;
    for (int64_t t = 0; t < L; ++t) {
        const REAL* dt = dts + t * GL_CB;
        const REAL* ut = us + t * GL_CB;
        const REAL* hp = t ? h + (t - 1) * N * GL_CB : zero;
        REAL x[GL_CB];
#pragma omp simd
        for (int j = 0; j < GL_CB; ++j) x[j] = dt[j] * ut[j];
        for (int64_t n = 0; n < N; ++n) {
            const REAL bn = Bs[t * N + n];
            const REAL* An = At + n * GL_CB;
            REAL* an = a + (t * N + n) * GL_CB;
            REAL* hn = h + (t * N + n) * GL_CB;
            const REAL* hpn = hp + n * GL_CB;
#pragma omp simd
            for (int j = 0; j < GL_CB; ++j) {
                an[j] = GL_S(gl_exp2)(dt[j] * An[j]);
                hn[j] = an[j] * hpn[j] + x[j] * bn;
            }
        }
    }
    for (int64_t i = 0; i < N * GL_CB; ++i) lam[i] = 0;
    REAL* sum_dd = sums;
    REAL* sum_gu = sums + GL_CB;
    for (int64_t t = L - 1; t >= 0; --t) {
        const REAL* dt = dts + t * GL_CB;
        const REAL* ut = us + t * GL_CB;
        const REAL* g = gys + t * GL_CB;
        const REAL* hp = t ? h + (t - 1) * N * GL_CB : zero;
        REAL dtu[GL_CB], lamB[GL_CB], qA[GL_CB];
#pragma omp simd
        for (int j = 0; j < GL_CB; ++j) { dtu[j] = dt[j] * ut[j]; lamB[j] = 0; qA[j] = 0; }
        for (int64_t n = 0; n < N; ++n) {
            const REAL bn = Bs[t * N + n], cn = Cs[t * N + n];
            const REAL* An = At + n * GL_CB;
            const REAL* an = a + (t * N + n) * GL_CB;
            const REAL* hn = h + (t * N + n) * GL_CB;
            const REAL* hpn = hp + n * GL_CB;
            REAL* dBn = dBl + (t * N + n) * GL_CB;
            REAL* dCn = dCl + (t * N + n) * GL_CB;
            REAL* ln = lam + n * GL_CB;
            REAL* dAn = dAl + n * GL_CB;
#pragma omp simd
            for (int j = 0; j < GL_CB; ++j) {
                const REAL l = ln[j] + g[j] * cn;
                dCn[j] += g[j] * hn[j];
                dBn[j] += dtu[j] * l;
                lamB[j] += l * bn;
                const REAL q = l * an[j] * hpn[j];
                qA[j] += q * An[j];
                dAn[j] += q * dt[j];
                ln[j] = an[j] * l;
            }
        }
#pragma omp simd
        for (int j = 0; j < GL_CB; ++j) {
            dus[t * GL_CB + j] = lamB[j] * dt[j] + Dv[j] * g[j];
            const REAL dd = (lamB[j] * ut[j] + qA[j] * ln2) * sig[t * GL_CB + j];
            dds[t * GL_CB + j] = dd;
            sum_dd[j] += dd;
            sum_gu[j] += g[j] * ut[j];
        }
    }
}

/* Scratch layout of grad_rows, in REALs. */
#define GL_GRAD_SCRATCH(L, N) (4 * (L) * (N) * GL_CB + 2 * (L) * (N) + 6 * (L) * GL_CB + 2 * (L) \
                               + 4 * (N) * GL_CB + 3 * GL_CB)

static inline __attribute__((always_inline)) int GL_FN(grad_rows)(
    const REAL* u, const REAL* delta, const REAL* bias, int sp, const REAL* A2,
    const REAL* B, const REAL* C, const int64_t* sB, const int64_t* sC, const REAL* D, const REAL* gy,
    REAL* du, REAL* ddelta, REAL* dAacc, REAL* dDacc, REAL* dbacc, REAL* dB, REAL* dC,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, const int64_t N)
{
    const int64_t Dk = KD / K;
    REAL* buf = (REAL*)malloc(sizeof(REAL) * (size_t)GL_GRAD_SCRATCH(L, N));
    if (!buf) return 1;
    REAL* a = buf;
    REAL* h = a + L * N * GL_CB;
    REAL* dBl = h + L * N * GL_CB;
    REAL* dCl = dBl + L * N * GL_CB;
    REAL* Bs = dCl + L * N * GL_CB;
    REAL* Cs = Bs + L * N;
    REAL* dts = Cs + L * N;
    REAL* us = dts + L * GL_CB;
    REAL* gys = us + L * GL_CB;
    REAL* sig = gys + L * GL_CB;
    REAL* dus = sig + L * GL_CB;
    REAL* dds = dus + L * GL_CB;
    REAL* row = dds + L * GL_CB;
    REAL* srow = row + L;
    REAL* At = srow + L;
    REAL* lam = At + N * GL_CB;
    REAL* dAl = lam + N * GL_CB;
    REAL* zero = dAl + N * GL_CB;
    REAL* Dv = zero + N * GL_CB;
    REAL* sums = Dv + GL_CB;
    for (int64_t i = 0; i < N * GL_CB; ++i) zero[i] = 0;
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t k = 0; k < K; ++k) {
            const REAL* Bg = B + b * sB[0] + k * sB[1];
            const REAL* Cg = C + b * sC[0] + k * sC[1];
            GL_FN(gather_bc)(Bg, Cg, sB, sC, N, L, Bs, Cs);
            for (int64_t i = 0; i < L * N * GL_CB; ++i) dBl[i] = dCl[i] = 0;
            for (int64_t d0 = k * Dk; d0 < (k + 1) * Dk; d0 += GL_CB) {
                const int64_t cnt = (k + 1) * Dk - d0 < GL_CB ? (k + 1) * Dk - d0 : GL_CB;
                for (int64_t j = 0; j < GL_CB; ++j) {
                    const int64_t d = d0 + j, off = (b * KD + d) * L;
                    if (j < cnt) {
                        GL_FN(row_dt)(delta + off, bias ? bias[d] : (REAL)0, sp, L, row, srow);
                        for (int64_t t = 0; t < L; ++t) {
                            dts[t * GL_CB + j] = row[t];
                            sig[t * GL_CB + j] = srow[t];
                            us[t * GL_CB + j] = u[off + t];
                            gys[t * GL_CB + j] = gy[off + t];
                        }
                        for (int64_t n = 0; n < N; ++n) At[n * GL_CB + j] = A2[d * N + n];
                        Dv[j] = D ? D[d] : (REAL)0;
                    } else {
                        for (int64_t t = 0; t < L; ++t)
                            dts[t * GL_CB + j] = sig[t * GL_CB + j] = us[t * GL_CB + j] = gys[t * GL_CB + j] = 0;
                        for (int64_t n = 0; n < N; ++n) At[n * GL_CB + j] = 0;
                        Dv[j] = 0;
                    }
                }
                for (int64_t i = 0; i < N * GL_CB; ++i) dAl[i] = 0;
                for (int64_t i = 0; i < 2 * GL_CB; ++i) sums[i] = 0;
                GL_FN(grad_block)(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, lam, dAl, zero,
                                  dus, dds, sums, L, N);
                for (int64_t j = 0; j < cnt; ++j) {
                    const int64_t d = d0 + j, off = (b * KD + d) * L;
                    for (int64_t t = 0; t < L; ++t) {
                        du[off + t] = dus[t * GL_CB + j];
                        ddelta[off + t] = dds[t * GL_CB + j];
                    }
                    for (int64_t n = 0; n < N; ++n) dAacc[d * N + n] += dAl[n * GL_CB + j];
                    dbacc[d] += sums[j];
                    dDacc[d] += sums[GL_CB + j];
                }
            }
            REAL* dBg = dB + (b * K + k) * N * L;
            REAL* dCg = dC + (b * K + k) * N * L;
            for (int64_t t = 0; t < L; ++t)
                for (int64_t n = 0; n < N; ++n) {
                    REAL sb = 0, sc = 0;
                    for (int j = 0; j < GL_CB; ++j) {
                        sb += dBl[(t * N + n) * GL_CB + j];
                        sc += dCl[(t * N + n) * GL_CB + j];
                    }
                    dBg[n * L + t] = sb;
                    dCg[n * L + t] = sc;
                }
        }
    }
    free(buf);
    return 0;
}

/* sB, sC: the element strides of B and C over (batch, group, state, time). */
int GL_FN(gl_scan_grad)(
    const REAL* u, const REAL* delta, const REAL* bias, int64_t sp, const REAL* A2,
    const REAL* B, const REAL* C, const int64_t* sB, const int64_t* sC, const REAL* D, const REAL* gy,
    REAL* du, REAL* ddelta, REAL* dAacc, REAL* dDacc, REAL* dbacc, REAL* dB, REAL* dC,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, int64_t N)
{
    int rc;
    GL_FTZ_BEGIN
#if GL_FUSED_AVX512
    if (N == 16)
        rc = gl_grad_rows16(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, gy, du, ddelta, dAacc, dDacc, dbacc,
                            dB, dC, b0, b1, KD, K, L);
    else
#endif
    if (N == 16)
        rc = GL_FN(grad_rows)(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, gy, du, ddelta, dAacc, dDacc,
                              dbacc, dB, dC, b0, b1, KD, K, L, 16);
    else
        rc = GL_FN(grad_rows)(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, gy, du, ddelta, dAacc, dDacc,
                              dbacc, dB, dC, b0, b1, KD, K, L, N);
    GL_FTZ_END
    return rc;
}
