/* AVX-512 layout helpers of the float kernels (16 lanes): the transposes between a block's rows
   (one row of L values per channel, the layout of u, delta, gy, du, ddelta) and its lane layout
   (L rows of 16 lanes, one lane per channel: the layout the channel-blocked scans work in), and
   the sum of 16 vectors' lanes. Not a header of its own: #included once by scan_kernel.c, only
   when the compiler targets AVX-512F (the -march=native build); the portable build keeps the
   scalar loops of scan_kernel_infer.h / scan_kernel_grad.h.

   They replace per-element strided copies that cost as much as the scan itself at S²Mamba's
   spectral (BSS) shape: 16x16 tiles are transposed in registers (unpack / shuffle / 128-bit lane
   shuffles, 64 shuffles per 256 values) and the lane sums of dB and dC take a 45-operation
   permute-and-add tree per 16 sums instead of 240 scalar additions. */

/* In-register transpose of a 16x16 tile: r[i][j] -> r[j][i]. */
static inline __attribute__((always_inline)) void gl_tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xDD);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xDD);
    }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
    }
}

/* dst[t*dstride + j] = src[j*stride + t] for j < cnt, 0 for cnt <= j < 16; t < L. Reads only the
   cnt rows (a block at the end of a group or of the tensor has fewer than 16 channels). */
static void gl_rows_to_lanes16s(const float* src, int64_t stride, int64_t cnt, int64_t L, float* dst,
                                int64_t dstride) {
    int64_t t0 = 0;
    for (; t0 + 16 <= L; t0 += 16) {
        __m512 r[16];
        _Pragma("GCC unroll 16")
        for (int j = 0; j < 16; ++j)  /* rows j >= cnt: a masked load of nothing (no access), zeros */
            r[j] = _mm512_maskz_loadu_ps(j < cnt ? 0xFFFF : 0, src + (j < cnt ? j * stride + t0 : 0));
        gl_tr16(r);
        _Pragma("GCC unroll 16")
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (t0 + i) * dstride, r[i]);
    }
    for (int64_t t = t0; t < L; ++t)
        for (int64_t j = 0; j < 16; ++j) dst[t * dstride + j] = j < cnt ? src[j * stride + t] : 0.0f;
}

static void gl_rows_to_lanes16(const float* src, int64_t stride, int64_t cnt, int64_t L, float* dst) {
    gl_rows_to_lanes16s(src, stride, cnt, L, dst, 16);
}

/* dst[j*stride + t] (+)= src[t*sstride + j] for j < cnt (only those rows are touched); t < L. */
static inline __attribute__((always_inline)) void gl_lanes16_to_rows_impl(
    const float* src, int64_t sstride, int64_t L, int64_t cnt, float* dst, int64_t stride, const int add) {
    /* non-temporal stores for whole tiles of a written (not added) output whose rows are 64-byte
       aligned: the outputs (y, du, ddelta) are far larger than the caches and read only later */
    const int stream = !add && cnt == 16 && ((uintptr_t)dst & 63) == 0 && (stride & 15) == 0;
    int64_t t0 = 0;
    for (; t0 + 16 <= L; t0 += 16) {
        __m512 r[16];
        _Pragma("GCC unroll 16")
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (t0 + i) * sstride);
        gl_tr16(r);
        if (stream) {  /* full rows, 64-byte aligned: stores that skip the read-for-ownership */
            _Pragma("GCC unroll 16")
            for (int j = 0; j < 16; ++j) _mm512_stream_ps(dst + j * stride + t0, r[j]);
            continue;
        }
        _Pragma("GCC unroll 16")
        for (int j = 0; j < 16; ++j) {  /* rows j >= cnt: masked accesses of nothing */
            const __mmask16 m = j < cnt ? 0xFFFF : 0;
            float* d = dst + (j < cnt ? j * stride + t0 : 0);
            _mm512_mask_storeu_ps(d, m, add ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, d), r[j]) : r[j]);
        }
    }
    for (int64_t t = t0; t < L; ++t)
        for (int64_t j = 0; j < cnt; ++j)
            dst[j * stride + t] = add ? dst[j * stride + t] + src[t * sstride + j] : src[t * sstride + j];
}

static void gl_lanes16_to_rows(const float* src, int64_t L, int64_t cnt, float* dst, int64_t stride) {
    gl_lanes16_to_rows_impl(src, 16, L, cnt, dst, stride, 0);
}

static void gl_lanes16_to_rows_add(const float* src, int64_t sstride, int64_t L, int64_t cnt, float* dst,
                                   int64_t stride) {
    gl_lanes16_to_rows_impl(src, sstride, L, cnt, dst, stride, 1);
}

/* The 16 lane sums of v[0..15]: lane n of the result is the sum of v[n]'s 16 lanes (pairwise tree). */
static inline __m512 gl_lanesum16(const __m512 v[16]) {
    const __m512i lo1 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi1 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i lo2 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i hi2 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512i lo3 = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i hi3 = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const __m512i lo4 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i hi4 = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 c[8], d[4], e[2];
    for (int k = 0; k < 8; ++k)
        c[k] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * k], lo1, v[2 * k + 1]),
                             _mm512_permutex2var_ps(v[2 * k], hi1, v[2 * k + 1]));
    for (int k = 0; k < 4; ++k)
        d[k] = _mm512_add_ps(_mm512_permutex2var_ps(c[2 * k], lo2, c[2 * k + 1]),
                             _mm512_permutex2var_ps(c[2 * k], hi2, c[2 * k + 1]));
    for (int k = 0; k < 2; ++k)
        e[k] = _mm512_add_ps(_mm512_permutex2var_ps(d[2 * k], lo3, d[2 * k + 1]),
                             _mm512_permutex2var_ps(d[2 * k], hi3, d[2 * k + 1]));
    return _mm512_add_ps(_mm512_permutex2var_ps(e[0], lo4, e[1]), _mm512_permutex2var_ps(e[0], hi4, e[1]));
}

/* out[n*L + t] = sum_j acc[(t*16 + n)*16 + j]  (the lane-wise dB / dC sums of a group, N = 16). */
static void gl_lanesum_tn16(const float* acc, int64_t L, float* stage, float* out) {
    for (int64_t t = 0; t < L; ++t) {
        __m512 v[16];
        _Pragma("GCC unroll 16")
        for (int n = 0; n < 16; ++n) v[n] = _mm512_loadu_ps(acc + (t * 16 + n) * 16);
        _mm512_storeu_ps(stage + t * 16, gl_lanesum16(v));
    }
    gl_lanes16_to_rows(stage, L, 16, out, L);
}

/* Prefetch cnt rows of L floats (row j at base + j*stride) into the cache: the next block's
   inputs, fetched while the current block computes (the scan is otherwise stalled on memory at
   the start of every block: its rows are read in one burst). */
static inline void gl_prefetch_rows(const float* base, int64_t stride, int64_t cnt, int64_t L) {
    for (int64_t j = 0; j < cnt; ++j)
        for (int64_t i = 0; i < L; i += 16) _mm_prefetch((const char*)(base + j * stride + i), _MM_HINT_T0);
}

/* ---- the scan blocks: 16 lanes, N = 16 states in registers ------------------------------------

   A block is 16 scans run side by side, one per lane, over L steps; inputs in lane layout:
   dts, us, gys, sig (L, 16); At (16 states, 16 lanes) = A * log2(e); Dv (16). The lanes are
   either 16 channels of one item and group ("channel lanes": B[t][n] and C[t][n] are shared by
   the lanes and broadcast from Bs, Cs of layout (L, 16 states)) or one channel of 16 items
   ("item lanes", vec = 1: every lane has its own B and C, Bs and Cs of layout (L, 16 states,
   16 lanes)). Item lanes fill the lanes left empty by a group whose channel count is not a
   multiple of 16 (S²Mamba's spectral scans have 49 channels per group: 3 channel blocks and the
   49th channel of 16 items in one item block, instead of 4 channel blocks with 15 of the last
   block's 16 lanes computed and discarded). Per lane the arithmetic and its order are those of
   the portable blocks (infer_block / grad_block of scan_kernel_infer.h / scan_kernel_grad.h). */

static inline __attribute__((always_inline)) __m512 gl_bc16(const float* X, int64_t t, int n, const int vec) {
    return vec ? _mm512_loadu_ps(X + (t * 16 + n) * 16) : _mm512_set1_ps(X[t * 16 + n]);
}

/* The forward: ys[t] = sum_n C[t,n] h[t,n] + D u[t]. */
static inline __attribute__((always_inline)) void gl_infer_block16_impl(
    const float* dts, const float* us, const float* Bs, const float* Cs, const float* At, const float* Dv,
    float* ys, int64_t L, const int vec)
{
    __m512 hv[16];
    _Pragma("GCC unroll 16")
    for (int n = 0; n < 16; ++n) hv[n] = _mm512_setzero_ps();
    const __m512 dv = _mm512_loadu_ps(Dv);
    for (int64_t t = 0; t < L; ++t) {
        const __m512 dt = _mm512_loadu_ps(dts + 16 * t);
        const __m512 ut = _mm512_loadu_ps(us + 16 * t);
        const __m512 x = _mm512_mul_ps(dt, ut);
        __m512 acc = _mm512_setzero_ps();
        _Pragma("GCC unroll 16")
        for (int n = 0; n < 16; ++n) {
            const __m512 av = gl_exp2_avx512(_mm512_mul_ps(dt, _mm512_loadu_ps(At + 16 * n)));
            hv[n] = _mm512_fmadd_ps(av, hv[n], _mm512_mul_ps(x, gl_bc16(Bs, t, n, vec)));
            acc = _mm512_fmadd_ps(gl_bc16(Cs, t, n, vec), hv[n], acc);
        }
        _mm512_storeu_ps(ys + 16 * t, _mm512_fmadd_ps(dv, ut, acc));
    }
}

static void gl_infer_block16(const float* dts, const float* us, const float* Bs, const float* Cs, const float* At,
                             const float* Dv, float* ys, int64_t L) {
    gl_infer_block16_impl(dts, us, Bs, Cs, At, Dv, ys, L, 0);
}

static void gl_infer_block16v(const float* dts, const float* us, const float* Bs, const float* Cs, const float* At,
                              const float* Dv, float* ys, int64_t L) {
    gl_infer_block16_impl(dts, us, Bs, Cs, At, Dv, ys, L, 1);
}

/* The backward (grad_block's contract): recompute a[t][n] and h[t][n] into scratch (L*256 each),
   then the adjoint backwards in time with lam[n] in registers. dBl, dCl ((L, 16, 16), lane-wise)
   and dAl ((16, 16)) are added to; sums[0..15] += ddelta, sums[16..31] += g*u (per lane);
   dus, dds (L, 16) written. */
static inline __attribute__((always_inline)) void gl_grad_block16_impl(
    const float* dts, const float* us, const float* gys, const float* sig, const float* Bs, const float* Cs,
    const float* At, const float* Dv, float* a, float* h, float* dBl, float* dCl, float* dAl,
    float* dus, float* dds, float* sums, int64_t L, const int vec)
{
    __m512 hv[16];
    _Pragma("GCC unroll 16")
    for (int n = 0; n < 16; ++n) hv[n] = _mm512_setzero_ps();
    for (int64_t t = 0; t < L; ++t) {
        const __m512 dt = _mm512_loadu_ps(dts + 16 * t);
        const __m512 x = _mm512_mul_ps(dt, _mm512_loadu_ps(us + 16 * t));
        float* at = a + 256 * t;
        float* ht = h + 256 * t;
        _Pragma("GCC unroll 16")
        for (int n = 0; n < 16; ++n) {
            const __m512 av = gl_exp2_avx512(_mm512_mul_ps(dt, _mm512_loadu_ps(At + 16 * n)));
            hv[n] = _mm512_fmadd_ps(av, hv[n], _mm512_mul_ps(x, gl_bc16(Bs, t, n, vec)));
            _mm512_storeu_ps(at + 16 * n, av);
            _mm512_storeu_ps(ht + 16 * n, hv[n]);
        }
    }
    __m512 lam[16];
    _Pragma("GCC unroll 16")
    for (int n = 0; n < 16; ++n) lam[n] = _mm512_setzero_ps();
    const __m512 ln2 = _mm512_set1_ps(0.69314718055994530942f), dv = _mm512_loadu_ps(Dv);
    __m512 sum_dd = _mm512_loadu_ps(sums), sum_gu = _mm512_loadu_ps(sums + 16);
    for (int64_t t = L - 1; t >= 0; --t) {
        const __m512 dt = _mm512_loadu_ps(dts + 16 * t);
        const __m512 ut = _mm512_loadu_ps(us + 16 * t);
        const __m512 g = _mm512_loadu_ps(gys + 16 * t);
        const __m512 dtu = _mm512_mul_ps(dt, ut);
        const float* at = a + 256 * t;
        const float* ht = h + 256 * t;
        const float* hp = t ? h + 256 * (t - 1) : h;  /* h[-1] = 0: its products are masked below */
        const __mmask16 first = t ? 0xFFFF : 0;
        float* dBt = dBl + 256 * t;
        float* dCt = dCl + 256 * t;
        __m512 lamB = _mm512_setzero_ps(), qA = _mm512_setzero_ps();
        _Pragma("GCC unroll 16")
        for (int n = 0; n < 16; ++n) {
            const __m512 bn = gl_bc16(Bs, t, n, vec);
            const __m512 av = _mm512_loadu_ps(at + 16 * n);
            const __m512 l = _mm512_fmadd_ps(g, gl_bc16(Cs, t, n, vec), lam[n]);
            _mm512_storeu_ps(dCt + 16 * n, _mm512_fmadd_ps(g, _mm512_loadu_ps(ht + 16 * n), _mm512_loadu_ps(dCt + 16 * n)));
            _mm512_storeu_ps(dBt + 16 * n, _mm512_fmadd_ps(dtu, l, _mm512_loadu_ps(dBt + 16 * n)));
            lamB = _mm512_fmadd_ps(l, bn, lamB);
            const __m512 q = _mm512_maskz_mul_ps(first, _mm512_mul_ps(l, av), _mm512_loadu_ps(hp + 16 * n));
            qA = _mm512_fmadd_ps(q, _mm512_loadu_ps(At + 16 * n), qA);
            _mm512_storeu_ps(dAl + 16 * n, _mm512_fmadd_ps(q, dt, _mm512_loadu_ps(dAl + 16 * n)));
            lam[n] = _mm512_mul_ps(av, l);
        }
        _mm512_storeu_ps(dus + 16 * t, _mm512_fmadd_ps(lamB, dt, _mm512_mul_ps(dv, g)));
        const __m512 dd = _mm512_mul_ps(_mm512_fmadd_ps(lamB, ut, _mm512_mul_ps(qA, ln2)), _mm512_loadu_ps(sig + 16 * t));
        _mm512_storeu_ps(dds + 16 * t, dd);
        sum_dd = _mm512_add_ps(sum_dd, dd);
        sum_gu = _mm512_fmadd_ps(g, ut, sum_gu);
    }
    _mm512_storeu_ps(sums, sum_dd);
    _mm512_storeu_ps(sums + 16, sum_gu);
}

static void gl_grad_block16(const float* dts, const float* us, const float* gys, const float* sig, const float* Bs,
                            const float* Cs, const float* At, const float* Dv, float* a, float* h, float* dBl,
                            float* dCl, float* dAl, float* dus, float* dds, float* sums, int64_t L) {
    gl_grad_block16_impl(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, dAl, dus, dds, sums, L, 0);
}

static void gl_grad_block16v(const float* dts, const float* us, const float* gys, const float* sig, const float* Bs,
                             const float* Cs, const float* At, const float* Dv, float* a, float* h, float* dBl,
                             float* dCl, float* dAl, float* dus, float* dds, float* sums, int64_t L) {
    gl_grad_block16_impl(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, dAl, dus, dds, sums, L, 1);
}

/* The row-level kernels (scan_kernel_avx512_rows.h, after the float instantiation whose helpers
   they use); gl_scan_infer_f32 / gl_scan_grad_f32 call them for N = 16. */
static int gl_infer_rows16(const float* u, const float* delta, const float* bias, int sp, const float* A2,
                           const float* B, const float* C, const int64_t* sB, const int64_t* sC, const float* D,
                           float* y, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L);
static int gl_grad_rows16(const float* u, const float* delta, const float* bias, int sp, const float* A2,
                          const float* B, const float* C, const int64_t* sB, const int64_t* sC, const float* D,
                          const float* gy, float* du, float* ddelta, float* dAacc, float* dDacc, float* dbacc,
                          float* dB, float* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L);
