/* Native kernel of geolesf's ``cpu`` selective-scan backend (geolesf/ops/selective_scan/native.py).

   Compiled on first use with the system C compiler into a shared library loaded with ctypes;
   the compiled library is cached under a key that hashes the bytes of this file and of
   scan_kernel_body.h, scan_kernel_infer.h, scan_kernel_grad.h, scan_kernel_fused.h, scan_kernel_parallel.h, scan_kernel_instance.h and scan_kernel_avx512*.h, so editing any
   of them rebuilds it.

   Exports, one per precision (float: f32, double: f64):
     int gl_scan_infer_f32 / gl_scan_infer_f64 (...)   (channel-blocked forward, scan_kernel_infer.h)
     int gl_scan_grad_f32 / gl_scan_grad_f64 (...)     (channel-blocked backward, scan_kernel_grad.h)
     int gl_scan_fused_f32 / gl_scan_fused_f64 (...)   (multi-direction inference scan with the dt
                                                        projection and the cross-scan/merge folded in,
                                                        scan_kernel_fused.h)
   all returning 0 on success and 1 when scratch memory cannot be allocated, and
     int gl_run (...)                                  (any of them over batch parts on PyTorch's
                                                        OpenMP team, scan_kernel_parallel.h and the
                                                        end of this file).

   This file holds the scalar helpers and instantiates the precision-generic body
   (scan_kernel_instance.h: scan_kernel_body.h, scan_kernel_infer.h, scan_kernel_grad.h, scan_kernel_fused.h,
   scan_kernel_parallel.h) twice, with REAL / GL_FN / GL_S set for float and for double.
   Where the compiler targets AVX-512F, float with N = 16 runs the intrinsics kernels of
   scan_kernel_avx512.h (layout helpers and register-resident blocks, included before the
   instantiations) and scan_kernel_avx512_rows.h (the row-level loops, included after the float one). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
/* Flush-to-zero / denormals-are-zero around a kernel call (x86 SSE control register; elsewhere a no-op). */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define GL_FTZ_BEGIN const unsigned int gl_csr = _mm_getcsr(); _mm_setcsr(gl_csr | 0x8040u);
#define GL_FTZ_END _mm_setcsr(gl_csr);
#else
#define GL_FTZ_BEGIN
#define GL_FTZ_END
#endif

/* 2^x in float, vectorisable (no libm call): x = i + f with i = round(x), |f| <= 1/2,
   2^f by the degree-6 minimax polynomial of Cephes' exp2f (relative error ~1.5e-7),
   2^i from the exponent bits. Exactly 0 below 2^-126 (no denormals), +inf from 2^128. */
static inline float gl_exp2f(float x) {
    const float big = 12582912.0f; /* 1.5 * 2^23: (x + big) - big rounds x to an integer */
    float xc = x < -126.0f ? -126.0f : (x > 127.0f ? 127.0f : x);
    float r = (xc + big) - big;
    float f = xc - r;
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    int32_t e = ((int32_t)r + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    float v = p * s;
    v = x < -126.0f ? 0.0f : v;
    v = x >= 128.0f ? INFINITY : v;
    return v;
}

static inline double gl_exp2d(double x) { return exp2(x); }

#if defined(__AVX512F__)
/* 16 floats' 2^x: the rounding and polynomial of gl_exp2f, 2^i applied with vscalefps; x is
   clamped below at -126 (2^-126 instead of 0 there: a difference below 1e-38). */
static inline __m512 gl_exp2_avx512(__m512 x) {
    const __m512 e = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    const __m512 r = _mm512_roundscale_ps(e, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(e, r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.535336188319500e-4f), f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, r);
}
#include "scan_kernel_avx512.h"
#endif

/* log(1 + e) for e in [0, 1], vectorisable: Cephes logf polynomial on the mantissa of
   y = 1 + e plus a first-order correction for the rounding of 1 + e. */
static inline float gl_log1p01f(float e) {
    float y = 1.0f + e;
    float c = (e - (y - 1.0f)) / y;
    int hi = y > 1.41421356f;
    float m = hi ? 0.5f * y : y;
    float k = hi ? 0.693147180559945f : 0.0f;
    float x = m - 1.0f;
    float z = x * x;
    float p = 7.0376836292e-2f;
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    return (x * z * p - 0.5f * z + x) + k + c;
}

/* softplus with PyTorch's threshold (z > 20 -> z) and its derivative sigmoid(z). */
static inline float gl_softplusf(float z) {
    float v = (z > 0.0f ? z : 0.0f) + gl_log1p01f(gl_exp2f(-fabsf(z) * 1.4426950408889634f));
    return z > 20.0f ? z : v;
}
static inline float gl_sigmoidf(float z) { return 1.0f / (1.0f + gl_exp2f(-z * 1.4426950408889634f)); }
/* softplus(z) and sigmoid(z) from one exp2: e = exp(-|z|), sigmoid = 1/(1+e) for z >= 0 and e/(1+e)
   below (the backward needs both; one exponential instead of two). */
static inline float gl_softplus_sigmoidf(float z, float* sig) {
    const float e = gl_exp2f(-fabsf(z) * 1.4426950408889634f);
    const float r = 1.0f / (1.0f + e);
    *sig = z >= 0.0f ? r : e * r;
    const float v = (z > 0.0f ? z : 0.0f) + gl_log1p01f(e);
    return z > 20.0f ? z : v;
}
static inline double gl_softplusd(double z) { return z > 20.0 ? z : log1p(exp(z)); }
static inline double gl_sigmoidd(double z) { return 1.0 / (1.0 + exp(-z)); }
static inline double gl_softplus_sigmoidd(double z, double* sig) { *sig = gl_sigmoidd(z); return gl_softplusd(z); }

/* ---- precision-generic body, instantiated once per precision -------------------------- */

#define GL_CAT_(a, b) a##b
#define GL_CAT(a, b) GL_CAT_(a, b)
/* GL_FN(name): name_f32 / name_f64 (function names of this precision) */
#define GL_FN(name) GL_CAT(name, GL_CAT(_, GL_SUF))
/* GL_S(name): namef / named (the scalar helpers above of this precision) */
#define GL_S(name) GL_CAT(name, GL_SHORT)

/* GL_FW: lanes per channel block of the fused multi-direction kernel (scan_kernel_fused.h):
   one 512-bit register of floats where the compiler targets AVX-512 (the -march=native build),
   else 8 (one 256-bit register; the portable build's loops vectorise to whatever the target has). */
#define REAL float
#define GL_SUF f32
#define GL_SHORT f
#if defined(__AVX512F__)
#define GL_FW 16
#define GL_CB 16
#define GL_FUSED_AVX512 1
#else
#define GL_FW 8
#define GL_CB 8
#define GL_FUSED_AVX512 0
#endif
#include "scan_kernel_instance.h"

#define REAL double
#define GL_SUF f64
#define GL_SHORT d
#define GL_FW 8
#define GL_CB 8
#define GL_FUSED_AVX512 0
#include "scan_kernel_instance.h"

/* ---- batch-parallel runs on the caller's OpenMP runtime ------------------------------------

   int gl_run(which, a, batch, nparts, first, last, omp_parallel, threads)

   Runs parts [first, last) of a call of kernel `which` (the index into gl_parts below) whose
   batch is split into nparts contiguous ranges, part p being items [batch*p/nparts,
   batch*(p+1)/nparts); `a` holds the kernel's arguments (scan_kernel_parallel.h). With
   omp_parallel, the address of GOMP_parallel in the OpenMP runtime PyTorch itself runs on
   (found by native.py), the parts are spread over `threads` threads of that runtime's team,
   which take them in turn from a shared counter; otherwise they run one after another on the
   calling thread. Using PyTorch's own team means no second set of threads: the worker that
   PyTorch's last parallel op left spinning takes the next part at once, instead of competing
   for a core with a pool of our own. Returns 0, 1 when a kernel could not allocate its scratch,
   2 for an unknown kernel. */

typedef int (*gl_part_fn)(const int64_t* a, int64_t b0, int64_t b1, int64_t part);
static const gl_part_fn gl_parts[] = {
    gl_part_infer_f32, gl_part_infer_f64, gl_part_grad_f32, gl_part_grad_f64,
    gl_part_fused_f32, gl_part_fused_f64, gl_part_fused_grad_f32, gl_part_fused_grad_f64,
};

typedef struct {
    gl_part_fn fn;
    const int64_t* a;
    int64_t batch, nparts, last;
    int64_t next; /* the next part to take (atomic) */
    int rc;       /* set (atomic) when a part fails */
} gl_job;

static void gl_job_work(void* p) {
    gl_job* j = (gl_job*)p;
    for (;;) {
        const int64_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->last)
            break;
        const int64_t b0 = j->batch * i / j->nparts, b1 = j->batch * (i + 1) / j->nparts;
        if (b1 > b0 && j->fn(j->a, b0, b1, i))
            __atomic_store_n(&j->rc, 1, __ATOMIC_RELAXED);
    }
}

typedef void (*gl_omp_parallel_fn)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);

int gl_run(int64_t which, const int64_t* a, int64_t batch, int64_t nparts, int64_t first, int64_t last,
           void* omp_parallel, int64_t threads) {
    if (which < 0 || which >= (int64_t)(sizeof gl_parts / sizeof gl_parts[0]))
        return 2;
    gl_job job = {gl_parts[which], a, batch, nparts, last, first, 0};
    if (omp_parallel && threads > 1 && last - first > 1)
        ((gl_omp_parallel_fn)omp_parallel)(gl_job_work, &job, (unsigned)threads, 0u);
    else
        gl_job_work(&job);
    return job.rc;
}
