/* Precision-generic body of the selective-scan kernel. Not a header of its own: it is
   #included twice by scan_kernel.c, which defines before each inclusion
     REAL      the scalar type (float or double),
     GL_FN(x)  x_f32 / x_f64   (names of the functions defined here),
     GL_S(x)   xf / xd         (the scalar helpers of scan_kernel.c: gl_exp2, gl_softplus, gl_sigmoid).
   Hence no include guard. Holds the softplus helper and the backward; the forward is in
   scan_kernel_infer.h (channel-blocked).

   Layouts: u, dt, y, gy, du, ddt (batch, K*D, L); Bt, Ct, dB, dC (batch, K, L, N)
   (time-major per group, so the state axis N is contiguous and the inner loops vectorise);
   A2 = A*log2(e) (K*D, N). */

/* dt[t] = softplus(delta[t] + bias) (or without softplus) for one row, and optionally
   sig[t] = d dt / d delta. */
static inline __attribute__((always_inline)) void GL_FN(row_dt)(
    const REAL* delta, REAL bias, int sp, int64_t L, REAL* dt, REAL* sig)
{
    if (sp) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) dt[t] = GL_S(gl_softplus)(delta[t] + bias);
        if (sig) {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) sig[t] = GL_S(gl_sigmoid)(delta[t] + bias);
        }
    } else {
        for (int64_t t = 0; t < L; ++t) dt[t] = delta[t] + bias;
        if (sig) for (int64_t t = 0; t < L; ++t) sig[t] = 1;
    }
}

/* Backward for batch rows [b0, b1): per (b, d) row, recompute dt, the decays a[t] and the
   states h[t] into scratch, then run the adjoint lam backwards in time. Writes du and
   ddelta; accumulates dA (natural units of A), dD, dbias (per part) and dB, dC (rows of
   this part only, so parts never write the same memory). */
static inline __attribute__((always_inline)) int GL_FN(bwd_rows)(
    const REAL* u, const REAL* delta, const REAL* bias, int sp, const REAL* A2,
    const REAL* Bt, const REAL* Ct, const REAL* D, const REAL* gy,
    REAL* du, REAL* ddelta, REAL* dAacc, REAL* dDacc, REAL* dbacc,
    REAL* dB, REAL* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L,
    const int64_t N)
{
    const int64_t Dk = KD / K;
    const REAL ln2 = (REAL)0.69314718055994530942;
    REAL* a = (REAL*)malloc(sizeof(REAL) * (size_t)(2 * L * N + N + 2 * L));
    if (!a) return 1;
    REAL* h = a + L * N;
    REAL* lam = h + L * N;
    REAL* dt = lam + N;
    REAL* sig = dt + L;
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t d = 0; d < KD; ++d) {
            const int64_t row = (b * KD + d) * L;
            const int64_t grp = (b * K + d / Dk) * L * N;
            const REAL* Bb = Bt + grp;
            const REAL* Cb = Ct + grp;
            REAL* dBb = dB + grp;
            REAL* dCb = dC + grp;
            const REAL* Ad = A2 + d * N;
            REAL* dAd = dAacc + d * N;
            const REAL Dd = D ? D[d] : (REAL)0;
            GL_FN(row_dt)(delta + row, bias ? bias[d] : (REAL)0, sp, L, dt, sig);
            for (int64_t t = 0; t < L; ++t) {
                const REAL dtt = dt[t], xt = dtt * u[row + t];
                const REAL* Bn = Bb + t * N;
                REAL* at = a + t * N;
                REAL* ht = h + t * N;
                if (t) {
                    /* h[t-1] is only read for t > 0: at t = 0 the scratch holds whatever malloc
                       returned, and 0 * (NaN or Inf left there) would poison the gradients. */
                    const REAL* hp = h + (t - 1) * N;
#pragma omp simd
                    for (int64_t n = 0; n < N; ++n) {
                        at[n] = GL_S(gl_exp2)(dtt * Ad[n]);
                        ht[n] = at[n] * hp[n] + xt * Bn[n];
                    }
                } else {
#pragma omp simd
                    for (int64_t n = 0; n < N; ++n) {
                        at[n] = GL_S(gl_exp2)(dtt * Ad[n]);
                        ht[n] = xt * Bn[n];
                    }
                }
            }
            for (int64_t n = 0; n < N; ++n) lam[n] = 0;
            REAL sum_dd = 0, sum_gu = 0;
            for (int64_t t = L - 1; t >= 0; --t) {
                const REAL g = gy[row + t], dtt = dt[t], ut = u[row + t];
                const REAL dtu = dtt * ut;
                const REAL* Bn = Bb + t * N;
                const REAL* Cn = Cb + t * N;
                REAL* dBn = dBb + t * N;
                REAL* dCn = dCb + t * N;
                const REAL* at = a + t * N;
                const REAL* ht = h + t * N;
                REAL lamB = 0, qA = 0;
                if (t > 0) {
                    const REAL* hp = h + (t - 1) * N;
#pragma omp simd reduction(+:lamB, qA)
                    for (int64_t n = 0; n < N; ++n) {
                        const REAL l = lam[n] + g * Cn[n];
                        dCn[n] += g * ht[n];
                        dBn[n] += dtu * l;
                        lamB += l * Bn[n];
                        const REAL q = l * at[n] * hp[n];
                        qA += q * Ad[n];
                        dAd[n] += q * dtt;
                        lam[n] = at[n] * l;
                    }
                } else {
#pragma omp simd reduction(+:lamB)
                    for (int64_t n = 0; n < N; ++n) {
                        const REAL l = lam[n] + g * Cn[n];
                        dCn[n] += g * ht[n];
                        dBn[n] += dtu * l;
                        lamB += l * Bn[n];
                    }
                }
                du[row + t] = lamB * dtt + Dd * g;
                const REAL dd = (lamB * ut + qA * ln2) * sig[t];
                ddelta[row + t] = dd;
                sum_dd += dd;
                sum_gu += g * ut;
            }
            dDacc[d] += sum_gu;
            dbacc[d] += sum_dd;
        }
    }
    free(a);
    return 0;
}

int GL_FN(gl_scan_bwd)(
    const REAL* u, const REAL* delta, const REAL* bias, int64_t sp, const REAL* A2,
    const REAL* Bt, const REAL* Ct, const REAL* D, const REAL* gy,
    REAL* du, REAL* ddelta, REAL* dAacc, REAL* dDacc, REAL* dbacc,
    REAL* dB, REAL* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, int64_t N)
{
    if (N == 16)
        return GL_FN(bwd_rows)(u, delta, bias, (int)sp, A2, Bt, Ct, D, gy, du, ddelta, dAacc, dDacc, dbacc,
                              dB, dC, b0, b1, KD, K, L, 16);
    return GL_FN(bwd_rows)(u, delta, bias, (int)sp, A2, Bt, Ct, D, gy, du, ddelta, dAacc, dDacc, dbacc,
                          dB, dC, b0, b1, KD, K, L, N);
}
