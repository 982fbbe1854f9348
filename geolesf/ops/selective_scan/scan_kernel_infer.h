/* Channel-blocked forward of the selective scan: the inference kernel, also the forward of the
   training path. Not a header of its own: #included by scan_kernel.c once per precision, after
   scan_kernel_body.h (same REAL / GL_FN / GL_S macros). Hence no include guard.

   Where the row kernel (scan_kernel_body.h) keeps one (batch, channel) row's N states in a
   vector and sums C*h across that vector at every step, this one takes GL_CB channels of one
   group at a time and keeps their states as h[n][j] (j = channel in the block): every
   operation of a step is then a lane-wise GL_CB-wide vector operation with B[t,n] and C[t,n]
   broadcast (they are shared by the group's channels), and there is no horizontal sum.
   GL_CB = 8 fills a 256-bit register in float32 (the width both AVX2 and Zen 4's AVX-512 run
   at full rate); a group whose channel count is not a multiple of 8 pads its last block with
   zero lanes that are computed and discarded.

   Layout transposes are folded in here: B and C are read through four strides each
   (batch, group, state, time: any view, e.g. a split of the x_proj output, needs no copy),
   transposed once per (batch, group) into time-major scratch; u and softplus(delta + bias)
   are transposed per block into (L, GL_CB) scratch; y is written back row-wise.
   u, delta and y are contiguous (batch, K*D, L); A2 = A * log2(e) is (K*D, N).

   Nothing is kept for a backward pass. Summation order per step: sum over n in order 0..N-1,
   then + D*u (the row kernel sums the N products as a SIMD tree: results agree to rounding). */

#ifndef GL_CB
#define GL_CB 8
#endif

static inline __attribute__((always_inline)) void GL_FN(infer_block)(
    const REAL* dts, const REAL* us, const REAL* Bs, const REAL* Cs, const REAL* At,
    const REAL* Dv, REAL* ys, int64_t L, const int64_t N, REAL* h)
{
    for (int64_t i = 0; i < N * GL_CB; ++i) h[i] = 0;
    for (int64_t t = 0; t < L; ++t) {
        const REAL* dt = dts + t * GL_CB;
        const REAL* ut = us + t * GL_CB;
        const REAL* Bt = Bs + t * N;
        const REAL* Ct = Cs + t * N;
        REAL x[GL_CB], acc[GL_CB];
#pragma omp simd
        for (int j = 0; j < GL_CB; ++j) { x[j] = dt[j] * ut[j]; acc[j] = 0; }
        for (int64_t n = 0; n < N; ++n) {
            const REAL bn = Bt[n], cn = Ct[n];
            const REAL* An = At + n * GL_CB;
            REAL* hn = h + n * GL_CB;
#pragma omp simd
            for (int j = 0; j < GL_CB; ++j) {
                const REAL hv = GL_S(gl_exp2)(dt[j] * An[j]) * hn[j] + x[j] * bn;
                hn[j] = hv;
                acc[j] += cn * hv;
            }
        }
        REAL* yt = ys + t * GL_CB;
#pragma omp simd
        for (int j = 0; j < GL_CB; ++j) yt[j] = acc[j] + Dv[j] * ut[j];
    }
}

static inline __attribute__((always_inline)) int GL_FN(infer_rows)(
    const REAL* u, const REAL* delta, const REAL* bias, int sp, const REAL* A2,
    const REAL* B, const REAL* C, const int64_t* sB, const int64_t* sC, const REAL* D, REAL* y,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, const int64_t N)
{
    const int64_t Dk = KD / K;
    REAL* buf = (REAL*)malloc(sizeof(REAL) * (size_t)(2 * L * N + 3 * L * GL_CB + L + 2 * N * GL_CB + GL_CB));
    if (!buf) return 1;
    REAL* Bs = buf;
    REAL* Cs = Bs + L * N;
    REAL* dts = Cs + L * N;
    REAL* us = dts + L * GL_CB;
    REAL* ys = us + L * GL_CB;
    REAL* row = ys + L * GL_CB;
    REAL* At = row + L;
    REAL* h = At + N * GL_CB;
    REAL* Dv = h + N * GL_CB;
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t k = 0; k < K; ++k) {
            const REAL* Bg = B + b * sB[0] + k * sB[1];
            const REAL* Cg = C + b * sC[0] + k * sC[1];
            GL_FN(gather_bc)(Bg, Cg, sB, sC, N, L, Bs, Cs);
            for (int64_t d0 = k * Dk; d0 < (k + 1) * Dk; d0 += GL_CB) {
                const int64_t cnt = (k + 1) * Dk - d0 < GL_CB ? (k + 1) * Dk - d0 : GL_CB;
                for (int64_t j = 0; j < GL_CB; ++j) {
                    if (j < cnt) {
                        const int64_t d = d0 + j, off = (b * KD + d) * L;
                        GL_FN(row_dt)(delta + off, bias ? bias[d] : (REAL)0, sp, L, row, 0);
                        for (int64_t t = 0; t < L; ++t) {
                            dts[t * GL_CB + j] = row[t];
                            us[t * GL_CB + j] = u[off + t];
                        }
                        for (int64_t n = 0; n < N; ++n) At[n * GL_CB + j] = A2[d * N + n];
                        Dv[j] = D ? D[d] : (REAL)0;
                    } else {
                        for (int64_t t = 0; t < L; ++t) dts[t * GL_CB + j] = us[t * GL_CB + j] = 0;
                        for (int64_t n = 0; n < N; ++n) At[n * GL_CB + j] = 0;
                        Dv[j] = 0;
                    }
                }
                GL_FN(infer_block)(dts, us, Bs, Cs, At, Dv, ys, L, N, h);
                for (int64_t j = 0; j < cnt; ++j) {
                    REAL* yr = y + (b * KD + d0 + j) * L;
                    for (int64_t t = 0; t < L; ++t) yr[t] = ys[t * GL_CB + j];
                }
            }
        }
    }
    free(buf);
    return 0;
}

/* sB, sC: the element strides of B and C over (batch, group, state, time). */
int GL_FN(gl_scan_infer)(
    const REAL* u, const REAL* delta, const REAL* bias, int64_t sp, const REAL* A2,
    const REAL* B, const REAL* C, const int64_t* sB, const int64_t* sC, const REAL* D, REAL* y,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, int64_t N)
{
    int rc;
    GL_FTZ_BEGIN
#if GL_FUSED_AVX512
    if (N == 16)
        rc = gl_infer_rows16(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, y, b0, b1, KD, K, L);
    else
#endif
    if (N == 16)
        rc = GL_FN(infer_rows)(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, y, b0, b1, KD, K, L, 16);
    else
        rc = GL_FN(infer_rows)(u, delta, bias, (int)sp, A2, B, C, sB, sC, D, y, b0, b1, KD, K, L, N);
    GL_FTZ_END
    return rc;
}
