/* The row-level AVX-512 kernels of the float selective scan for N = 16 (the -march=native build on
   CPUs with AVX-512F): gl_scan_infer_f32 / gl_scan_grad_f32 call them in place of infer_rows /
   grad_rows. Not a header of its own: #included once by scan_kernel.c after the float
   instantiation, whose helpers (row_dt_f32, gather_bc_f32) they use.

   Same contract and per-lane arithmetic as infer_rows / grad_rows; what differs is the work
   layout. Items are taken 16 at a time; per item and group, the channels come in blocks of 16
   channel lanes (scan_kernel_avx512.h), and the channels left over when the group's channel count
   is not a multiple of 16 are run as item-lane blocks, one per leftover channel, over the 16
   items — so no lane is computed for nothing when the batch range is a multiple of 16. Rows and
   lanes are exchanged by in-register transposes, dB and dC are summed over a group's channel
   lanes by a permute-and-add tree, and item-lane blocks add their lane-wise dB and dC (already per
   item) to the items' rows. */

/* One block's inputs in lane layout. Lane j reads row off + j*rs of u, delta and gy (gy and
   rsig/sig may be null) and channel d0 + j*dstep (dstep 1: channel lanes, 0: item lanes) of bias,
   A2 and D. Lanes cnt..15 are zero. */
static void gl_prep16(const float* u, const float* delta, const float* gy, const float* bias, int sp,
                      const float* A2, const float* D, int64_t off, int64_t rs, int64_t cnt, int64_t d0,
                      int64_t dstep, int64_t L, float* rdt, float* rsig, float* dts, float* sig, float* us,
                      float* gys, float* At, float* Dv)
{
    for (int64_t j = 0; j < cnt; ++j) {
        const int64_t d = d0 + j * dstep;
        row_dt_f32(delta + off + j * rs, bias ? bias[d] : 0.0f, sp, L, rdt + j * L, rsig ? rsig + j * L : 0);
    }
    gl_rows_to_lanes16(rdt, L, cnt, L, dts);
    if (rsig) gl_rows_to_lanes16(rsig, L, cnt, L, sig);
    gl_rows_to_lanes16(u + off, rs, cnt, L, us);
    if (gy) gl_rows_to_lanes16(gy + off, rs, cnt, L, gys);
    for (int64_t j = 0; j < 16; ++j) {
        const int64_t d = d0 + j * dstep;
        for (int64_t n = 0; n < 16; ++n) At[n * 16 + j] = j < cnt ? A2[d * 16 + n] : 0.0f;
        Dv[j] = j < cnt && D ? D[d] : 0.0f;
    }
}

/* Channel lanes: Bs[t*16 + n] = B[b, k, n, t], Cs likewise (read through their strides): by
   transposes where time is contiguous, else by the portable kernels' gather_bc. */
static void gl_group_bc16(const float* B, const float* C, const int64_t* sB, const int64_t* sC, int64_t b,
                          int64_t k, int64_t L, float* Bs, float* Cs) {
    const float* Bg = B + b * sB[0] + k * sB[1];
    const float* Cg = C + b * sC[0] + k * sC[1];
    if (sB[3] != 1 || sC[3] != 1) {
        gather_bc_f32(Bg, Cg, sB, sC, 16, L, Bs, Cs);
        return;
    }
    gl_rows_to_lanes16(Bg, sB[2], 16, L, Bs);
    gl_rows_to_lanes16(Cg, sC[2], 16, L, Cs);
}

/* Item lanes: out[(t*16 + n)*16 + j] = X[b + j, k, n, t] for j < cnt, 0 above. */
static void gl_items_bc16(const float* X, const int64_t* s, int64_t b, int64_t k, int64_t cnt, int64_t L,
                          float* out) {
    for (int64_t n = 0; n < 16; ++n) {
        const float* g = X + b * s[0] + k * s[1] + n * s[2];
        if (s[3] == 1) {
            gl_rows_to_lanes16s(g, s[0], cnt, L, out + n * 16, 256);
            continue;
        }
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < 16; ++j) out[(t * 16 + n) * 16 + j] = j < cnt ? g[j * s[0] + t * s[3]] : 0.0f;
    }
}

/* Offset of the channel block after block blk of item b (the next item's first block of group
   k, whose first channel is k0, after the last), or -1 after the chunk's last item. */
static inline int64_t gl_next_block(int64_t off, int64_t blk, int64_t nfull, int64_t b, int64_t bend, int64_t KD,
                                    int64_t k0, int64_t L) {
    if (blk + 1 < nfull) return off + 16 * L;
    return b + 1 < bend ? ((b + 1) * KD + k0) * L : -1;
}

static int gl_infer_rows16(const float* u, const float* delta, const float* bias, int sp, const float* A2,
                           const float* B, const float* C, const int64_t* sB, const int64_t* sC, const float* D,
                           float* y, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L)
{
    const int64_t Dk = KD / K, nfull = Dk / 16, L16 = 16 * L;
    float* buf = (float*)malloc(sizeof(float) * (size_t)(2 * 16 * L16 + 6 * L16 + 256 + 16));
    if (!buf) return 1;
    float *Bv = buf, *Cv = Bv + 16 * L16, *Bs = Cv + 16 * L16, *Cs = Bs + L16, *dts = Cs + L16;
    float *us = dts + L16, *ys = us + L16, *rdt = ys + L16, *At = rdt + L16, *Dv = At + 256;
    for (int64_t bc = b0; bc < b1; bc += 16) {
        const int64_t m = b1 - bc < 16 ? b1 - bc : 16;
        for (int64_t k = 0; k < K; ++k) {
            for (int64_t b = bc; nfull && b < bc + m; ++b) {
                gl_group_bc16(B, C, sB, sC, b, k, L, Bs, Cs);
                for (int64_t blk = 0; blk < nfull; ++blk) {
                    const int64_t d0 = k * Dk + 16 * blk, off = (b * KD + d0) * L;
                    gl_prep16(u, delta, 0, bias, sp, A2, D, off, L, 16, d0, 1, L, rdt, 0, dts, 0, us, 0, At, Dv);
                    const int64_t next = gl_next_block(off, blk, nfull, b, bc + m, KD, k * Dk, L);
                    if (next >= 0) {
                        gl_prefetch_rows(u + next, L, 16, L);
                        gl_prefetch_rows(delta + next, L, 16, L);
                    }
                    gl_infer_block16(dts, us, Bs, Cs, At, Dv, ys, L);
                    gl_lanes16_to_rows(ys, L, 16, y + off, L);
                }
            }
            if (16 * nfull == Dk) continue;
            gl_items_bc16(B, sB, bc, k, m, L, Bv);
            gl_items_bc16(C, sC, bc, k, m, L, Cv);
            for (int64_t d = k * Dk + 16 * nfull; d < (k + 1) * Dk; ++d) {
                const int64_t off = (bc * KD + d) * L;
                gl_prep16(u, delta, 0, bias, sp, A2, D, off, KD * L, m, d, 0, L, rdt, 0, dts, 0, us, 0, At, Dv);
                if (d + 1 < (k + 1) * Dk) {
                    gl_prefetch_rows(u + off + L, KD * L, m, L);
                    gl_prefetch_rows(delta + off + L, KD * L, m, L);
                }
                gl_infer_block16v(dts, us, Bv, Cv, At, Dv, ys, L);
                gl_lanes16_to_rows(ys, L, m, y + off, KD * L);
            }
        }
    }
    _mm_sfence();  /* order the non-temporal stores of gl_lanes16_to_rows before returning */
    free(buf);
    return 0;
}

static int gl_grad_rows16(const float* u, const float* delta, const float* bias, int sp, const float* A2,
                          const float* B, const float* C, const int64_t* sB, const int64_t* sC, const float* D,
                          const float* gy, float* du, float* ddelta, float* dAacc, float* dDacc, float* dbacc,
                          float* dB, float* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L)
{
    const int64_t Dk = KD / K, nfull = Dk / 16, L16 = 16 * L, LN = 16 * L16;
    float* buf = (float*)malloc(sizeof(float) * (size_t)(8 * LN + 11 * L16 + 2 * 256 + 16 + 32));
    if (!buf) return 1;
    float *a = buf, *h = a + LN, *dBl = h + LN, *dCl = dBl + LN, *dBv = dCl + LN, *dCv = dBv + LN;
    float *Bv = dCv + LN, *Cv = Bv + LN, *Bs = Cv + LN, *Cs = Bs + L16, *dts = Cs + L16, *us = dts + L16;
    float *gys = us + L16, *sig = gys + L16, *dus = sig + L16, *dds = dus + L16, *stage = dds + L16;
    float *rdt = stage + L16, *rsig = rdt + L16, *At = rsig + L16, *dAl = At + 256, *Dv = dAl + 256;
    float* sums = Dv + 16;
    for (int64_t bc = b0; bc < b1; bc += 16) {
        const int64_t m = b1 - bc < 16 ? b1 - bc : 16;
        for (int64_t k = 0; k < K; ++k) {
            for (int64_t b = bc; b < bc + m; ++b) {
                float* dBg = dB + (b * K + k) * L16;
                float* dCg = dC + (b * K + k) * L16;
                if (!nfull) {  /* only item-lane blocks: they add to zeroed rows */
                    memset(dBg, 0, sizeof(float) * (size_t)L16);
                    memset(dCg, 0, sizeof(float) * (size_t)L16);
                    continue;
                }
                gl_group_bc16(B, C, sB, sC, b, k, L, Bs, Cs);
                memset(dBl, 0, sizeof(float) * (size_t)LN);
                memset(dCl, 0, sizeof(float) * (size_t)LN);
                for (int64_t blk = 0; blk < nfull; ++blk) {
                    const int64_t d0 = k * Dk + 16 * blk, off = (b * KD + d0) * L;
                    gl_prep16(u, delta, gy, bias, sp, A2, D, off, L, 16, d0, 1, L, rdt, rsig, dts, sig, us, gys, At, Dv);
                    const int64_t next = gl_next_block(off, blk, nfull, b, bc + m, KD, k * Dk, L);
                    if (next >= 0) {
                        gl_prefetch_rows(u + next, L, 16, L);
                        gl_prefetch_rows(delta + next, L, 16, L);
                        gl_prefetch_rows(gy + next, L, 16, L);
                    }
                    memset(dAl, 0, sizeof(float) * 256);
                    memset(sums, 0, sizeof(float) * 32);
                    gl_grad_block16(dts, us, gys, sig, Bs, Cs, At, Dv, a, h, dBl, dCl, dAl, dus, dds, sums, L);
                    gl_lanes16_to_rows(dus, L, 16, du + off, L);
                    gl_lanes16_to_rows(dds, L, 16, ddelta + off, L);
                    for (int64_t j = 0; j < 16; ++j) {
                        for (int64_t n = 0; n < 16; ++n) dAacc[(d0 + j) * 16 + n] += dAl[n * 16 + j];
                        dbacc[d0 + j] += sums[j];
                        dDacc[d0 + j] += sums[16 + j];
                    }
                }
                gl_lanesum_tn16(dBl, L, stage, dBg);
                gl_lanesum_tn16(dCl, L, stage, dCg);
            }
            if (16 * nfull == Dk) continue;
            gl_items_bc16(B, sB, bc, k, m, L, Bv);
            gl_items_bc16(C, sC, bc, k, m, L, Cv);
            memset(dBv, 0, sizeof(float) * (size_t)LN);
            memset(dCv, 0, sizeof(float) * (size_t)LN);
            for (int64_t d = k * Dk + 16 * nfull; d < (k + 1) * Dk; ++d) {
                const int64_t off = (bc * KD + d) * L;
                gl_prep16(u, delta, gy, bias, sp, A2, D, off, KD * L, m, d, 0, L, rdt, rsig, dts, sig, us, gys, At, Dv);
                if (d + 1 < (k + 1) * Dk) {
                    gl_prefetch_rows(u + off + L, KD * L, m, L);
                    gl_prefetch_rows(delta + off + L, KD * L, m, L);
                    gl_prefetch_rows(gy + off + L, KD * L, m, L);
                }
                memset(dAl, 0, sizeof(float) * 256);
                memset(sums, 0, sizeof(float) * 32);
                gl_grad_block16v(dts, us, gys, sig, Bv, Cv, At, Dv, a, h, dBv, dCv, dAl, dus, dds, sums, L);
                gl_lanes16_to_rows(dus, L, m, du + off, KD * L);
                gl_lanes16_to_rows(dds, L, m, ddelta + off, KD * L);
                for (int64_t j = 0; j < m; ++j) {
                    for (int64_t n = 0; n < 16; ++n) dAacc[d * 16 + n] += dAl[n * 16 + j];
                    dbacc[d] += sums[j];
                    dDacc[d] += sums[16 + j];
                }
            }
            for (int64_t n = 0; n < 16; ++n) {  /* row (item bc + j, group k, state n) of dB / dC */
                gl_lanes16_to_rows_add(dBv + n * 16, 256, L, m, dB + ((bc * K + k) * 16 + n) * L, K * L16);
                gl_lanes16_to_rows_add(dCv + n * 16, 256, L, m, dC + ((bc * K + k) * 16 + n) * L, K * L16);
            }
        }
    }
    _mm_sfence();  /* order the non-temporal stores of gl_lanes16_to_rows before returning */
    free(buf);
    return 0;
}
