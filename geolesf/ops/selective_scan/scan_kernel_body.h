/* Precision-generic body of the selective-scan kernel. Not a header of its own: it is
   #included twice by scan_kernel.c, which defines before each inclusion
     REAL      the scalar type (float or double),
     GL_FN(x)  x_f32 / x_f64   (names of the functions defined here),
     GL_S(x)   xf / xd         (the scalar helpers of scan_kernel.c: gl_exp2, gl_softplus, gl_sigmoid).
   Hence no include guard. Holds the per-row softplus helper shared by the forward
   (scan_kernel_infer.h) and the backward (scan_kernel_grad.h).

   Layouts: u, dt, y, gy, du, ddt (batch, K*D, L); Bt, Ct, dB, dC (batch, K, L, N)
   (time-major per group, so the state axis N is contiguous and the inner loops vectorise);
   A2 = A*log2(e) (K*D, N). */

/* dt[t] = softplus(delta[t] + bias) (or without softplus) for one row, and optionally
   sig[t] = d dt / d delta. */
/* The (L, N) time-major copies Bs, Cs of one scan group's B and C, read through their strides
   (B and C are (batch, K, N, L) views; the group starts at Bg / Cg). */
static inline void GL_FN(gather_bc)(const REAL* Bg, const REAL* Cg, const int64_t* sB, const int64_t* sC,
                                    int64_t N, int64_t L, REAL* Bs, REAL* Cs) {
    for (int64_t n = 0; n < N; ++n)
        for (int64_t t = 0; t < L; ++t) {
            Bs[t * N + n] = Bg[n * sB[2] + t * sB[3]];
            Cs[t * N + n] = Cg[n * sC[2] + t * sC[3]];
        }
}

static inline __attribute__((always_inline)) void GL_FN(row_dt)(
    const REAL* delta, REAL bias, int sp, int64_t L, REAL* dt, REAL* sig)
{
    if (sp) {
        if (sig) {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) dt[t] = GL_S(gl_softplus_sigmoid)(delta[t] + bias, sig + t);
        } else {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) dt[t] = GL_S(gl_softplus)(delta[t] + bias);
        }
    } else {
        for (int64_t t = 0; t < L; ++t) dt[t] = delta[t] + bias;
        if (sig) for (int64_t t = 0; t < L; ++t) sig[t] = 1;
    }
}
