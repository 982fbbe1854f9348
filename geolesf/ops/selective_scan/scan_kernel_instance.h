/* One precision's kernels, included twice by scan_kernel.c: the includer defines REAL, GL_SUF, GL_SHORT,
   GL_FW, GL_CB and GL_FUSED_AVX512 (see there); they are undefined again at the end. The AVX-512 row loops
   (scan_kernel_avx512_rows.h) come in only where GL_FUSED_AVX512 is set (float, AVX-512 build). */

#include "scan_kernel_body.h"
#include "scan_kernel_infer.h"
#include "scan_kernel_grad.h"
#include "scan_kernel_fused.h"
#if GL_FUSED_AVX512
#include "scan_kernel_avx512_rows.h"
#endif
#include "scan_kernel_parallel.h"
#undef REAL
#undef GL_SUF
#undef GL_SHORT
#undef GL_FW
#undef GL_CB
#undef GL_FUSED_AVX512
