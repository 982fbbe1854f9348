/* Multi-direction inference scan with the projections and the layout work folded in (the
   inference forward of S²Mamba's PCS and BSS branches). Not a header of its own: #included by
   scan_kernel.c once per precision after scan_kernel_body.h (same REAL / GL_FN / GL_S macros;
   GL_FW = lanes per block). Hence no include guard.

   One call runs all K scan directions of a branch. Direction k (taken in the order korder[0..K-1])
   scans the L positions of an item in the order src[k][0..L-1] and adds its output at step t to
   position dst[k][t]; so a cross-scan (row-major, column-major, reversed) or a flip is an index
   pattern, not a copy, and the cross-merge is the accumulation (in korder's order, the summation
   order of the model's own merge). For channel d (0 <= d < Dk) of direction k, position p:

     u        = X[b*sxb + d*sxd + p*sxp]                      (shared by all directions)
     r-th dt input, B[n], C[n] = P[b*spb + p*spp + k*spk + c*spc] with c = r, R + n, R + N + n
     delta    = sum_r Wdt[(k*Dk + d)*R + r] * (dt input r)     (the dt projection, done here)
     dt       = softplus(delta + bias[k*Dk + d])              (softplus only if sp)
     h_n      = exp2(dt * A2[k*Dk + d, n]) * h_n + dt * B[n] * u,   h = 0 before the first step
     Y[b*syb + d*syd + dst[k][t]*syp] += sum_n C[n] h_n + D[k*Dk + d] * u

   Y is overwritten (not added to) by the first direction. The channels are processed GL_FW at a
   time with their N states as GL_FW-wide lane vectors (as scan_kernel_infer.h); B[n] and C[n]
   are broadcast. Nothing is kept for a backward pass. Returns 0, or 1 when scratch memory
   cannot be allocated. */

static inline __attribute__((always_inline)) void GL_FN(fused_block)(
    const REAL* dts, const REAL* usn, const REAL* Pk, int64_t spp, int64_t spc, int64_t R,
    const int32_t* src, const int32_t* dst, const REAL* At, const REAL* Dv, REAL* ysn,
    int64_t L, const int64_t N, REAL* h)
{
    for (int64_t i = 0; i < N * GL_FW; ++i) h[i] = 0;
    for (int64_t t = 0; t < L; ++t) {
        const REAL* dt = dts + t * GL_FW;
        const REAL* ut = usn + (int64_t)src[t] * GL_FW;
        const REAL* Bt = Pk + (int64_t)src[t] * spp + R * spc;
        const REAL* Ct = Bt + N * spc;
        REAL x[GL_FW], acc[GL_FW];
#pragma omp simd
        for (int j = 0; j < GL_FW; ++j) { x[j] = dt[j] * ut[j]; acc[j] = 0; }
        for (int64_t n = 0; n < N; ++n) {
            const REAL bn = Bt[n * spc], cn = Ct[n * spc];
            const REAL* An = At + n * GL_FW;
            REAL* hn = h + n * GL_FW;
#pragma omp simd
            for (int j = 0; j < GL_FW; ++j) {
                const REAL hv = GL_S(gl_exp2)(dt[j] * An[j]) * hn[j] + x[j] * bn;
                hn[j] = hv;
                acc[j] += cn * hv;
            }
        }
        REAL* yt = ysn + (int64_t)dst[t] * GL_FW;
#pragma omp simd
        for (int j = 0; j < GL_FW; ++j) yt[j] += acc[j] + Dv[j] * ut[j];
    }
}

#if GL_FUSED_AVX512
/* The same block with AVX-512 intrinsics (float, 16 lanes, N = 16 states in registers), used by
   the -march=native build on CPUs with AVX-512F; exp2 by gl_exp2_avx512 (scan_kernel.c). */
static void GL_FN(fused_block16_avx512)(
    const float* dts, const float* usn, const float* Pk, int64_t spp, int64_t spc, int64_t R,
    const int32_t* src, const int32_t* dst, const float* At, const float* Dv, float* ysn, int64_t L)
{
    __m512 hv[16], av[16];
    for (int n = 0; n < 16; ++n) { hv[n] = _mm512_setzero_ps(); av[n] = _mm512_loadu_ps(At + 16 * n); }
    const __m512 dv = _mm512_loadu_ps(Dv);
    for (int64_t t = 0; t < L; ++t) {
        const __m512 dt = _mm512_loadu_ps(dts + 16 * t);
        const __m512 ut = _mm512_loadu_ps(usn + 16 * (int64_t)src[t]);
        const float* Bt = Pk + (int64_t)src[t] * spp + R * spc;
        const float* Ct = Bt + 16 * spc;
        const __m512 x = _mm512_mul_ps(dt, ut);
        __m512 acc = _mm512_setzero_ps();
        for (int n = 0; n < 16; ++n) {
            const __m512 a = gl_exp2_avx512(_mm512_mul_ps(dt, av[n]));
            hv[n] = _mm512_fmadd_ps(a, hv[n], _mm512_mul_ps(x, _mm512_set1_ps(Bt[n * spc])));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(Ct[n * spc]), hv[n], acc);
        }
        float* yt = ysn + 16 * (int64_t)dst[t];
        _mm512_storeu_ps(yt, _mm512_add_ps(_mm512_loadu_ps(yt), _mm512_fmadd_ps(dv, ut, acc)));
    }
}
#endif

/* dts[t][j] = softplus(sum_r Wt[r][j] * P[src[t], r] + bias[j]) for one block and direction. */
static inline __attribute__((always_inline)) void GL_FN(fused_dt)(
    const REAL* Pk, int64_t spp, int64_t spc, int64_t R, const int32_t* src, const REAL* Wt,
    const REAL* bv, int sp, int64_t L, REAL* dts)
{
    for (int64_t t = 0; t < L; ++t) {
        const REAL* pr = Pk + (int64_t)src[t] * spp;
        REAL* dt = dts + t * GL_FW;
#pragma omp simd
        for (int j = 0; j < GL_FW; ++j) dt[j] = Wt[j] * pr[0];
        for (int64_t r = 1; r < R; ++r) {
            const REAL pv = pr[r * spc];
#pragma omp simd
            for (int j = 0; j < GL_FW; ++j) dt[j] += Wt[r * GL_FW + j] * pv;
        }
#pragma omp simd
        for (int j = 0; j < GL_FW; ++j) dt[j] += bv[j];
    }
    if (sp) {
#pragma omp simd
        for (int64_t i = 0; i < L * GL_FW; ++i) dts[i] = GL_S(gl_softplus)(dts[i]);
    }
}

static inline __attribute__((always_inline)) int GL_FN(fused_rows)(
    const REAL* X, const int64_t* sx, const REAL* P, const int64_t* sP, const REAL* Wdt, const REAL* bias,
    int sp, const REAL* A2, const REAL* D, const int32_t* src, const int32_t* dst, const int32_t* korder,
    REAL* Y, const int64_t* sy, int64_t b0, int64_t b1, int64_t K, int64_t Dk, int64_t L, int64_t R,
    const int64_t N)
{
    REAL* buf = (REAL*)malloc(sizeof(REAL) * (size_t)(3 * L * GL_FW + (R + 2 * N + 2) * GL_FW));
    if (!buf) return 1;
    REAL* usn = buf;
    REAL* ysn = usn + L * GL_FW;
    REAL* dts = ysn + L * GL_FW;
    REAL* Wt = dts + L * GL_FW;
    REAL* At = Wt + R * GL_FW;
    REAL* h = At + N * GL_FW;
    REAL* Dv = h + N * GL_FW;
    REAL* bv = Dv + GL_FW;
    for (int64_t b = b0; b < b1; ++b) {
        const REAL* Xb = X + b * sx[0];
        REAL* Yb = Y + b * sy[0];
        for (int64_t d0 = 0; d0 < Dk; d0 += GL_FW) {
            const int64_t cnt = Dk - d0 < GL_FW ? Dk - d0 : GL_FW;
#if GL_FUSED_AVX512
            if (N == 16 && (sx[1] == 1 || sx[2] == 1)) {  /* channels-last: masked rows; row-major: transposes */
                memset(ysn, 0, sizeof(REAL) * (size_t)(L * 16));
                if (sx[1] == 1)
                    for (int64_t p = 0; p < L; ++p)
                        _mm512_storeu_ps(usn + 16 * p, _mm512_maskz_loadu_ps((__mmask16)((1u << cnt) - 1u),
                                                                             Xb + d0 + p * sx[2]));
                else
                    gl_rows_to_lanes16(Xb + d0 * sx[1], sx[1], cnt, L, usn);
            } else
#endif
            for (int64_t p = 0; p < L; ++p)
                for (int64_t j = 0; j < GL_FW; ++j) {
                    usn[p * GL_FW + j] = j < cnt ? Xb[(d0 + j) * sx[1] + p * sx[2]] : (REAL)0;
                    ysn[p * GL_FW + j] = 0;
                }
            for (int64_t i = 0; i < K; ++i) {
                const int64_t k = korder[i];
                for (int64_t j = 0; j < GL_FW; ++j) {
                    const int64_t c = k * Dk + d0 + j;
                    for (int64_t r = 0; r < R; ++r) Wt[r * GL_FW + j] = j < cnt ? Wdt[c * R + r] : (REAL)0;
                    for (int64_t n = 0; n < N; ++n) At[n * GL_FW + j] = j < cnt ? A2[c * N + n] : (REAL)0;
                    Dv[j] = j < cnt && D ? D[c] : (REAL)0;
                    bv[j] = j < cnt && bias ? bias[c] : (REAL)0;
                }
                const REAL* Pk = P + b * sP[0] + k * sP[2];
                GL_FN(fused_dt)(Pk, sP[1], sP[3], R, src + k * L, Wt, bv, sp, L, dts);
#if GL_FUSED_AVX512
                if (N == 16) {
                    GL_FN(fused_block16_avx512)(dts, usn, Pk, sP[1], sP[3], R, src + k * L, dst + k * L, At, Dv,
                                                ysn, L);
                    continue;
                }
#endif
                GL_FN(fused_block)(dts, usn, Pk, sP[1], sP[3], R, src + k * L, dst + k * L, At, Dv, ysn, L, N, h);
            }
#if GL_FUSED_AVX512
            if (N == 16 && sy[1] == 1) {
                for (int64_t p = 0; p < L; ++p)
                    _mm512_mask_storeu_ps(Yb + d0 + p * sy[2], (__mmask16)((1u << cnt) - 1u), _mm512_loadu_ps(ysn + 16 * p));
                continue;
            }
#endif
            for (int64_t p = 0; p < L; ++p)
                for (int64_t j = 0; j < cnt; ++j) Yb[(d0 + j) * sy[1] + p * sy[2]] = ysn[p * GL_FW + j];
        }
    }
    free(buf);
    return 0;
}

/* sx = (sxb, sxd, sxp), sP = (spb, spp, spk, spc), sy = (syb, syd, syp): element strides. */
int GL_FN(gl_scan_fused)(
    const REAL* X, const int64_t* sx, const REAL* P, const int64_t* sP, const REAL* Wdt, const REAL* bias,
    int64_t sp, const REAL* A2, const REAL* D, const int32_t* src, const int32_t* dst, const int32_t* korder,
    REAL* Y, const int64_t* sy, int64_t b0, int64_t b1, int64_t K, int64_t Dk, int64_t L, int64_t R, int64_t N)
{
    /* Decays below 2^-126 make the states denormal, and arithmetic on denormals is many times
       slower on x86: flush them to zero (FTZ/DAZ) for this call, restoring the caller's mode. */
    GL_FTZ_BEGIN
    int rc = N == 16 ? GL_FN(fused_rows)(X, sx, P, sP, Wdt, bias, (int)sp, A2, D, src, dst, korder, Y, sy, b0,
                                         b1, K, Dk, L, R, 16)
                     : GL_FN(fused_rows)(X, sx, P, sP, Wdt, bias, (int)sp, A2, D, src, dst, korder, Y, sy, b0,
                                         b1, K, Dk, L, R, N);
    GL_FTZ_END
    return rc;
}

/* ---- backward of gl_scan_fused (the training path) ------------------------------------------

   Per item b and direction k, every block of GL_CB channels: the block's inputs are gathered in
   scan order (dt recomputed from P and Wdt, u from x at src[t], the output gradient from gy at
   dst[t], B and C from P at src[t]) and the channel-blocked adjoint of scan_kernel_grad.h
   (grad_block) runs on them. Its results go back as: du added to an (L, Dk) accumulator of the
   item at position src[t] (all directions read x); dB, dC and the dt-projection input gradient
   (ddelta[d] * Wdt[d, r]) accumulated lane-wise over the direction's blocks and summed across
   lanes once per (item, direction), then added to dP at position src[t]; dWdt (lane-wise over
   t), dbias, dA, dD added to this part's accumulators. dx and dP are written in full (every
   element); gy, dx, dP are read/written through strides. Per-part accumulators: dWacc
   (K*Dk, R), dAacc (K*Dk, N), dDacc, dbacc (K*Dk). The blocks are GL_CB wide (grad_block's
   width), which scan_kernel.c sets equal to GL_FW. */

#if GL_CB != GL_FW
#error "scan_kernel_fused.h: the backward needs GL_CB == GL_FW"
#endif

static inline __attribute__((always_inline)) int GL_FN(fused_grad_rows)(
    const REAL* X, const int64_t* sx, const REAL* P, const int64_t* sP, const REAL* Wdt, const REAL* bias,
    int sp, const REAL* A2, const REAL* D, const int32_t* src, const int32_t* dst,
    const REAL* GY, const int64_t* sg, REAL* DX, const int64_t* sdx, REAL* DP, const int64_t* sdp,
    REAL* dWacc, REAL* dAacc, REAL* dDacc, REAL* dbacc,
    int64_t b0, int64_t b1, int64_t K, int64_t Dk, int64_t L, int64_t R, const int64_t N)
{
    const int64_t C2 = R + 2 * N, W = GL_CB;
    const size_t n_real = (size_t)(4 * L * N * W + L * R * W + 2 * L * N + 6 * L * W + (2 * R + 4 * N + 4) * W
                                   + L * Dk + L * C2);
    REAL* buf = (REAL*)malloc(sizeof(REAL) * n_real);
    if (!buf) return 1;
    REAL* a = buf;
    REAL* h = a + L * N * W;
    REAL* dBl = h + L * N * W;
    REAL* dCl = dBl + L * N * W;
    REAL* dRl = dCl + L * N * W;
    REAL* Bs = dRl + L * R * W;
    REAL* Cs = Bs + L * N;
    REAL* dts = Cs + L * N;
    REAL* us = dts + L * W;
    REAL* gys = us + L * W;
    REAL* sig = gys + L * W;
    REAL* dus = sig + L * W;
    REAL* dds = dus + L * W;
    REAL* Wt = dds + L * W;
    REAL* dWl = Wt + R * W;
    REAL* At = dWl + R * W;
    REAL* lam = At + N * W;
    REAL* dAl = lam + N * W;
    REAL* zero = dAl + N * W;
    REAL* Dv = zero + N * W;
    REAL* bv = Dv + W;
    REAL* sums = bv + W;
    REAL* dxa = sums + 2 * W;    /* (L, Dk): du of the item, natural positions */
    REAL* dPa = dxa + L * Dk;    /* (L, C2): dP of one direction, natural positions */
    for (int64_t i = 0; i < N * W; ++i) zero[i] = 0;
    for (int64_t b = b0; b < b1; ++b) {
        const REAL* Xb = X + b * sx[0];
        const REAL* Gb = GY + b * sg[0];
        REAL* DPb = DP + b * sdp[0];
        for (int64_t i = 0; i < L * Dk; ++i) dxa[i] = 0;
        for (int64_t k = 0; k < K; ++k) {
            const REAL* Pk = P + b * sP[0] + k * sP[2];
            const int32_t* sk = src + k * L;
            const int32_t* dk = dst + k * L;
            for (int64_t t = 0; t < L; ++t) {
                const REAL* Pt = Pk + (int64_t)sk[t] * sP[1];
                for (int64_t n = 0; n < N; ++n) {
                    Bs[t * N + n] = Pt[(R + n) * sP[3]];
                    Cs[t * N + n] = Pt[(R + N + n) * sP[3]];
                }
            }
            for (int64_t i = 0; i < L * N * W; ++i) dBl[i] = dCl[i] = 0;
            for (int64_t i = 0; i < L * R * W; ++i) dRl[i] = 0;
            for (int64_t d0 = 0; d0 < Dk; d0 += W) {
                const int64_t cnt = Dk - d0 < W ? Dk - d0 : W;
                for (int64_t j = 0; j < W; ++j) {
                    const int64_t c = k * Dk + d0 + j;
                    for (int64_t r = 0; r < R; ++r) Wt[r * W + j] = j < cnt ? Wdt[c * R + r] : (REAL)0;
                    for (int64_t n = 0; n < N; ++n) At[n * W + j] = j < cnt ? A2[c * N + n] : (REAL)0;
                    Dv[j] = j < cnt && D ? D[c] : (REAL)0;
                    bv[j] = j < cnt && bias ? bias[c] : (REAL)0;
                }
                /* z = delta + bias in scan order; dt = softplus(z), sig = d dt / d z */
                GL_FN(fused_dt)(Pk, sP[1], sP[3], R, sk, Wt, bv, 0, L, dts);
                if (sp) {
#pragma omp simd
                    for (int64_t i = 0; i < L * W; ++i) {
                        sig[i] = GL_S(gl_sigmoid)(dts[i]);
                        dts[i] = GL_S(gl_softplus)(dts[i]);
                    }
                } else {
                    for (int64_t i = 0; i < L * W; ++i) sig[i] = 1;
                }
                for (int64_t t = 0; t < L; ++t)
                    for (int64_t j = 0; j < W; ++j) {
                        const int on = j < cnt;
                        us[t * W + j] = on ? Xb[(d0 + j) * sx[1] + (int64_t)sk[t] * sx[2]] : (REAL)0;
                        gys[t * W + j] = on ? Gb[(d0 + j) * sg[1] + (int64_t)dk[t] * sg[2]] : (REAL)0;
                        if (!on) dts[t * W + j] = sig[t * W + j] = 0;
                    }
                for (int64_t i = 0; i < N * W; ++i) dAl[i] = 0;
                for (int64_t i = 0; i < 2 * W; ++i) sums[i] = 0;
                GL_FN(grad_block)(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, lam, dAl, zero,
                                  dus, dds, sums, L, N);
                for (int64_t r = 0; r < R; ++r) {
                    const REAL* wr = Wt + r * W;
                    REAL acc[GL_CB];
                    for (int64_t j = 0; j < W; ++j) acc[j] = 0;
                    for (int64_t t = 0; t < L; ++t) {
                        const REAL pv = Pk[(int64_t)sk[t] * sP[1] + r * sP[3]];
                        const REAL* dd = dds + t * W;
                        REAL* dr = dRl + (t * R + r) * W;
#pragma omp simd
                        for (int64_t j = 0; j < W; ++j) {
                            acc[j] += dd[j] * pv;
                            dr[j] += dd[j] * wr[j];
                        }
                    }
                    for (int64_t j = 0; j < W; ++j) dWl[r * W + j] = acc[j];
                }
                for (int64_t t = 0; t < L; ++t) {
                    REAL* dxr = dxa + (int64_t)sk[t] * Dk + d0;
                    for (int64_t j = 0; j < cnt; ++j) dxr[j] += dus[t * W + j];
                }
                for (int64_t j = 0; j < cnt; ++j) {
                    const int64_t c = k * Dk + d0 + j;
                    for (int64_t n = 0; n < N; ++n) dAacc[c * N + n] += dAl[n * W + j];
                    for (int64_t r = 0; r < R; ++r) dWacc[c * R + r] += dWl[r * W + j];
                    dbacc[c] += sums[j];
                    dDacc[c] += sums[W + j];
                }
            }
            /* lanes summed once per (item, direction); padded lanes hold zeros */
            for (int64_t i = 0; i < L * C2; ++i) dPa[i] = 0;
            for (int64_t t = 0; t < L; ++t) {
                REAL* dq = dPa + (int64_t)sk[t] * C2;
                for (int64_t r = 0; r < R; ++r) {
                    REAL s0 = 0;
                    for (int64_t j = 0; j < W; ++j) s0 += dRl[(t * R + r) * W + j];
                    dq[r] += s0;
                }
                for (int64_t n = 0; n < N; ++n) {
                    REAL sb = 0, sc = 0;
                    for (int64_t j = 0; j < W; ++j) {
                        sb += dBl[(t * N + n) * W + j];
                        sc += dCl[(t * N + n) * W + j];
                    }
                    dq[R + n] += sb;
                    dq[R + N + n] += sc;
                }
            }
            for (int64_t p = 0; p < L; ++p)
                for (int64_t c = 0; c < C2; ++c) DPb[p * sdp[1] + k * sdp[2] + c * sdp[3]] = dPa[p * C2 + c];
        }
        REAL* DXb = DX + b * sdx[0];
        for (int64_t p = 0; p < L; ++p)
            for (int64_t d = 0; d < Dk; ++d) DXb[d * sdx[1] + p * sdx[2]] = dxa[p * Dk + d];
    }
    free(buf);
    return 0;
}

/* sg, sdx: (batch, channel, position) strides of gy and dx; sdp: (batch, position, direction,
   column) strides of dP. Other arguments as gl_scan_fused. */
int GL_FN(gl_scan_fused_grad)(
    const REAL* X, const int64_t* sx, const REAL* P, const int64_t* sP, const REAL* Wdt, const REAL* bias,
    int64_t sp, const REAL* A2, const REAL* D, const int32_t* src, const int32_t* dst,
    const REAL* GY, const int64_t* sg, REAL* DX, const int64_t* sdx, REAL* DP, const int64_t* sdp,
    REAL* dWacc, REAL* dAacc, REAL* dDacc, REAL* dbacc,
    int64_t b0, int64_t b1, int64_t K, int64_t Dk, int64_t L, int64_t R, int64_t N)
{
    GL_FTZ_BEGIN
    int rc = N == 16 ? GL_FN(fused_grad_rows)(X, sx, P, sP, Wdt, bias, (int)sp, A2, D, src, dst, GY, sg, DX, sdx, DP,
                                              sdp, dWacc, dAacc, dDacc, dbacc, b0, b1, K, Dk, L, R, 16)
                     : GL_FN(fused_grad_rows)(X, sx, P, sP, Wdt, bias, (int)sp, A2, D, src, dst, GY, sg, DX, sdx, DP,
                                              sdp, dWacc, dAacc, dDacc, dbacc, b0, b1, K, Dk, L, R, N);
    GL_FTZ_END
    return rc;
}
