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
