/* Batch-range drivers of this precision's four kernels, for gl_run (scan_kernel.c).

   Each unpacks its kernel's arguments from a flat array of 64-bit words, in the kernel's own
   order with b0 and b1 left out (pointers as integers, 0 for NULL), and runs the kernel on the
   batch items [b0, b1) as part `part` of a call: where the kernel adds partial sums into
   accumulators (dA, dD, d(delta_bias), dW), part p adds into slice p of each, so that no two
   threads write the same accumulator and the caller reduces the slices afterwards. */

#define GL_W(T, i) ((T)(intptr_t)a[i])

static int GL_FN(gl_part_infer)(const int64_t* a, int64_t b0, int64_t b1, int64_t part) {
    (void)part;
    return GL_FN(gl_scan_infer)(GL_W(const REAL*, 0), GL_W(const REAL*, 1), GL_W(const REAL*, 2), a[3],
        GL_W(const REAL*, 4), GL_W(const REAL*, 5), GL_W(const REAL*, 6), GL_W(const int64_t*, 7),
        GL_W(const int64_t*, 8), GL_W(const REAL*, 9), GL_W(REAL*, 10), b0, b1, a[11], a[12], a[13], a[14]);
}

static int GL_FN(gl_part_grad)(const int64_t* a, int64_t b0, int64_t b1, int64_t part) {
    const int64_t KD = a[18], N = a[21];
    return GL_FN(gl_scan_grad)(GL_W(const REAL*, 0), GL_W(const REAL*, 1), GL_W(const REAL*, 2), a[3],
        GL_W(const REAL*, 4), GL_W(const REAL*, 5), GL_W(const REAL*, 6), GL_W(const int64_t*, 7),
        GL_W(const int64_t*, 8), GL_W(const REAL*, 9), GL_W(const REAL*, 10), GL_W(REAL*, 11), GL_W(REAL*, 12),
        GL_W(REAL*, 13) + part * KD * N, GL_W(REAL*, 14) + part * KD, GL_W(REAL*, 15) + part * KD,
        GL_W(REAL*, 16), GL_W(REAL*, 17), b0, b1, KD, a[19], a[20], N);
}

static int GL_FN(gl_part_fused)(const int64_t* a, int64_t b0, int64_t b1, int64_t part) {
    (void)part;
    return GL_FN(gl_scan_fused)(GL_W(const REAL*, 0), GL_W(const int64_t*, 1), GL_W(const REAL*, 2),
        GL_W(const int64_t*, 3), GL_W(const REAL*, 4), GL_W(const REAL*, 5), a[6], GL_W(const REAL*, 7),
        GL_W(const REAL*, 8), GL_W(const int32_t*, 9), GL_W(const int32_t*, 10), GL_W(const int32_t*, 11),
        GL_W(REAL*, 12), GL_W(const int64_t*, 13), b0, b1, a[14], a[15], a[16], a[17], a[18]);
}

static int GL_FN(gl_part_fused_grad)(const int64_t* a, int64_t b0, int64_t b1, int64_t part) {
    const int64_t KD = a[21] * a[22], R = a[24], N = a[25];
    return GL_FN(gl_scan_fused_grad)(GL_W(const REAL*, 0), GL_W(const int64_t*, 1), GL_W(const REAL*, 2),
        GL_W(const int64_t*, 3), GL_W(const REAL*, 4), GL_W(const REAL*, 5), a[6], GL_W(const REAL*, 7),
        GL_W(const REAL*, 8), GL_W(const int32_t*, 9), GL_W(const int32_t*, 10), GL_W(const REAL*, 11),
        GL_W(const int64_t*, 12), GL_W(REAL*, 13), GL_W(const int64_t*, 14), GL_W(REAL*, 15),
        GL_W(const int64_t*, 16), GL_W(REAL*, 17) + part * KD * R, GL_W(REAL*, 18) + part * KD * N,
        GL_W(REAL*, 19) + part * KD, GL_W(REAL*, 20) + part * KD, b0, b1, a[21], a[22], a[23], R, N);
}

#undef GL_W
