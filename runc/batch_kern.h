/*
 * batch_kern.h - the batch engine's compute kernels: one step of the forward
 * pass for every row of a worker (embedding, RMSNorm, matrix-matrix products,
 * RoPE, attention, SwiGLU, classifier). Included by batch.c once per
 * instruction set: RB_SUFFIX names the variant, RB_ATTR is its function
 * attribute (empty for the portable build, target("avx2") for the x86
 * variant picked at run time). Not a header of its own: it sees batch.c's
 * types.
 *
 * RB_TILE_ROWS (2, 3 or 4) is the height of the matrix kernel's register
 * tile, by the number of vector registers of the instruction set.
 *
 * Every kernel repeats runc.c's arithmetic operation for operation (same
 * order of float additions, no fused multiply-add, the same exp), so that an
 * activation here is bit-identical to runc_forward's for the same token and
 * position: the batch engine's greedy answers are runc_solve's.
 *
 * The matrix products are written for the compiler's vectoriser: GNU C
 * vector types (8 floats; the compiler emits AVX, SSE or NEON instructions
 * for them) in register-blocked tiles over 32-byte aligned rows, with plain
 * C99 loops of the same arithmetic where the compiler lacks vector types.
 */

#define RB_FN(name) RB_CAT(name, RB_SUFFIX)

/* ---- small row kernels ------------------------------------------------------ */

/* runc.c's rmsnorm: a sequential sum of squares, then weight * (scale * x). */
static RB_ATTR void RB_FN(rmsnorm)(float *restrict out, const float *restrict x, const float *restrict weight,
                                   int n, float eps)
{
    float ss = 0.0f, scale;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = weight[i] * (scale * x[i]);
}

/* runc.c's quantize_q8 (runq.c's rounding: roundf(x / scale), clamped to
 * +-127, NaN to 0), in flat loops the compiler vectorises: the magnitudes'
 * bits (NaN as 0: runc.c's max never picks a NaN; for non-negative floats the
 * integer order is the float order), each group's maximum and scale, and then
 * every value, rounded by truncation and a half test (equal to roundf for
 * |v| <= 128) with integer masks instead of float compares, which compilers
 * may not if-convert. Dividing by 1 where the scale is 0 gives the same zeros
 * (such a group holds only zeros and NaNs). Quantized values are stored as
 * floats (exact small integers) for the float-emulated products.
 * ab and div: scratch of n entries. */
static RB_ATTR void RB_FN(quantize)(float *restrict q, float *restrict scales, const float *restrict x, int n, int gs,
                                    uint32_t *restrict ab, float *restrict div)
{
    int g = 0, i, groups = n / gs;
    for (i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        b &= 0x7FFFFFFFu;
        ab[i] = b > 0x7F800000u ? 0u : b;
    }
#if RB_KVEC
    /* groups of 2, 4 or 8 values: each vector of 8 holds whole groups, whose
     * maxima a butterfly of lane swaps spreads to all of their lanes */
    if (gs == 2 || gs == 4 || gs == 8) {
        for (i = 0; i + 8 <= n; i += 8, g += 8 / gs) {
            rb_v8u a, c, m;
            rb_v8 wmax, scale, one = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f}, d;
            int lane;
            memcpy(&a, ab + i, sizeof a);
            c = RB_SHUF(a, a, 1, 0, 3, 2, 5, 4, 7, 6);
            m = (rb_v8u)(a > c);
            a = (a & m) | (c & ~m);
            if (gs >= 4) {
                c = RB_SHUF(a, a, 2, 3, 0, 1, 6, 7, 4, 5);
                m = (rb_v8u)(a > c);
                a = (a & m) | (c & ~m);
            }
            if (gs == 8) {
                c = RB_SHUF(a, a, 4, 5, 6, 7, 0, 1, 2, 3);
                m = (rb_v8u)(a > c);
                a = (a & m) | (c & ~m);
            }
            wmax = (rb_v8)a;
            scale = wmax / 127.0f;
            m = (rb_v8u)(a != 0u); /* scale > 0 exactly when wmax > 0 */
            d = (rb_v8)(((rb_v8u)scale & m) | ((rb_v8u)one & ~m));
            memcpy(div + i, &d, sizeof d);
            for (lane = 0; lane < 8; lane += gs) scales[g + lane / gs] = scale[lane];
        }
    }
#endif
    for (; g < groups; g++) {
        const uint32_t *restrict ag = ab + (size_t)g * (size_t)gs;
        float *restrict dg = div + (size_t)g * (size_t)gs;
        uint32_t wb = 0;
        float wmax, scale, d;
        for (i = 0; i < gs; i++) wb = ag[i] > wb ? ag[i] : wb;
        memcpy(&wmax, &wb, sizeof wmax);
        scale = wmax / 127.0f;
        scales[g] = scale;
        d = wb != 0 ? scale : 1.0f; /* scale > 0 exactly when wmax > 0 */
        for (i = 0; i < gs; i++) dg[i] = d;
    }
    for (i = 0; i < n; i++) {
        float v = x[i] / div[i], d;
        uint32_t vb, av, m;
        int32_t ti;
        memcpy(&vb, &v, sizeof vb);
        av = vb & 0x7FFFFFFFu;
        m = 0u - (uint32_t)(av > 0x43000000u); /* |v| > 128, inf, NaN: +-128 */
        vb = (vb & ~m) | (((vb & 0x80000000u) | 0x43000000u) & m);
        m = 0u - (uint32_t)(av > 0x7F800000u); /* NaN: 0 */
        vb &= ~m;
        memcpy(&v, &vb, sizeof v);
        ti = (int32_t)v; /* truncation */
        d = v - (float)ti; /* exact */
        ti += (int32_t)(d >= 0.5f) - (int32_t)(d <= -0.5f);
        ti = ti > 127 ? 127 : ti;
        ti = ti < -127 ? -127 : ti;
        q[i] = (float)ti;
    }
}

/* ---- fp32 matrix-matrix product -------------------------------------------- */
/* out[r][c] = sum_j W[c][j] x[r][j] for B rows and d outputs, each sum as
 * runc.c's matmul_f32 forms it: eight partial sums over j mod 8, added as
 * ((a0+a4)+(a1+a5))+((a2+a6)+(a3+a7)), then the tail j >= n/8*8 in order. */

/* One output the way runc.c does it (leftover outputs; the portable build). */
static RB_ATTR float RB_FN(dot_f32)(const float *restrict row, const float *restrict x, int n)
{
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float sum;
    int j = 0, k;
    for (; j + 8 <= n; j += 8)
        for (k = 0; k < 8; k++) acc[k] += row[j + k] * x[j + k];
    sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; j < n; j++) sum += row[j] * x[j];
    return sum;
}

#if RB_KVEC
/* Tiles of R rows x 4 outputs (R = 1..4): one vector accumulator per (row,
 * output) over j = 0, 8, 16, ...; the 4 weight rows are loaded once per j for
 * all R rows. Then runc.c's reduction of each accumulator, and the tail
 * columns (n % 8, packed by 4 outputs) added in order. The 4-row tile needs
 * 16 accumulators: it is used where the CPU has 32 vector registers. */
#define RB_ACC(r) rb_v8 a##r##0 = {0}, a##r##1 = {0}, a##r##2 = {0}, a##r##3 = {0}
#define RB_MAC(r, xr)                                                                                        \
    do {                                                                                                     \
        const rb_v8 xv = *(const rb_v8 *)((xr) + j);                                                         \
        a##r##0 += q0 * xv;                                                                                  \
        a##r##1 += q1 * xv;                                                                                  \
        a##r##2 += q2 * xv;                                                                                  \
        a##r##3 += q3 * xv;                                                                                  \
    } while (0)
#define RB_LOADW                                                                                             \
    const rb_v8 q0 = *(const rb_v8 *)(w0 + j), q1 = *(const rb_v8 *)(w0 + ws + j);                           \
    const rb_v8 q2 = *(const rb_v8 *)(w0 + 2 * (size_t)ws + j), q3 = *(const rb_v8 *)(w0 + 3 * (size_t)ws + j)
/* finish rows (ra, rb) (rb may be a dummy row of zero accumulators) */
#define RB_FINISH(ra, rb, oa, ob, xa, xb, two)                                                               \
    do {                                                                                                     \
        rb_v8 s_;                                                                                            \
        rb_v4 lo_, hi_;                                                                                      \
        int jj_;                                                                                             \
        RB_REDUCE8(s_, a##ra##0, a##ra##1, a##ra##2, a##ra##3, a##rb##0, a##rb##1, a##rb##2, a##rb##3);      \
        lo_ = RB_SHUF(s_, s_, 0, 1, 2, 3);                                                                   \
        hi_ = RB_SHUF(s_, s_, 4, 5, 6, 7);                                                                   \
        for (jj_ = 0; j + jj_ < n; jj_++) {                                                                  \
            rb_v4 wt_;                                                                                       \
            memcpy(&wt_, tail + 4 * jj_, sizeof wt_);                                                        \
            lo_ += wt_ * (xa)[j + jj_];                                                                      \
            if (two) hi_ += wt_ * (xb)[j + jj_];                                                             \
        }                                                                                                    \
        memcpy(oa, &lo_, sizeof lo_);                                                                        \
        if (two) memcpy(ob, &hi_, sizeof hi_);                                                               \
    } while (0)

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(tile_4x4)(float *restrict o, int os, const float *restrict x, int xs,
                                                     const float *restrict w0, int ws, int n,
                                                     const float *restrict tail)
{
    const float *x0 = x, *x1 = x0 + xs, *x2 = x1 + xs, *x3 = x2 + xs;
    RB_ACC(0);
    RB_ACC(1);
    RB_ACC(2);
    RB_ACC(3);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        RB_LOADW;
        RB_MAC(0, x0);
        RB_MAC(1, x1);
        RB_MAC(2, x2);
        RB_MAC(3, x3);
    }
    RB_FINISH(0, 1, o, o + os, x0, x1, 1);
    RB_FINISH(2, 3, o + 2 * (size_t)os, o + 3 * (size_t)os, x2, x3, 1);
}

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(tile_3x4)(float *restrict o, int os, const float *restrict x, int xs,
                                                     const float *restrict w0, int ws, int n,
                                                     const float *restrict tail)
{
    const float *x0 = x, *x1 = x0 + xs, *x2 = x1 + xs;
    RB_ACC(0);
    RB_ACC(1);
    RB_ACC(2);
    RB_ACC(9); /* zeros */
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        RB_LOADW;
        RB_MAC(0, x0);
        RB_MAC(1, x1);
        RB_MAC(2, x2);
    }
    RB_FINISH(0, 1, o, o + os, x0, x1, 1);
    RB_FINISH(2, 9, o + 2 * (size_t)os, o, x2, x2, 0);
}

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(tile_2x4)(float *restrict o, int os, const float *restrict x, int xs,
                                                     const float *restrict w0, int ws, int n,
                                                     const float *restrict tail)
{
    const float *x0 = x, *x1 = x0 + xs;
    RB_ACC(0);
    RB_ACC(1);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        RB_LOADW;
        RB_MAC(0, x0);
        RB_MAC(1, x1);
    }
    RB_FINISH(0, 1, o, o + os, x0, x1, 1);
}

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(tile_1x4)(float *restrict o, int os, const float *restrict x, int xs,
                                                     const float *restrict w0, int ws, int n,
                                                     const float *restrict tail)
{
    const float *x0 = x;
    RB_ACC(0);
    RB_ACC(9); /* zeros */
    int j = 0;
    (void)xs;
    (void)os;
    for (; j + 8 <= n; j += 8) {
        RB_LOADW;
        RB_MAC(0, x0);
    }
    RB_FINISH(0, 9, o, o, x0, x0, 0);
}

#if RB_TILE_ROWS == 4
#define RB_TILE RB_FN(tile_4x4)
#elif RB_TILE_ROWS == 3
#define RB_TILE RB_FN(tile_3x4)
#else
#define RB_TILE RB_FN(tile_2x4)
#endif
#endif

/* out (B x d, row stride os) = x (B x n, row stride xs) @ W^T (d x n, row stride ws).
 * Outputs in groups of 4 (the weight rows stay in L1 while all rows pass). */
static RB_ATTR void RB_FN(gemm_f32)(float *restrict out, int os, const float *restrict x, int xs,
                                    const float *restrict w, int ws, const float *restrict tail, int B, int n,
                                    int d)
{
    int c0 = 0, r;
#if RB_KVEC
    const int tl = n % 8;
    for (; c0 + 4 <= d; c0 += 4) {
        const float *wc = w + (size_t)c0 * (size_t)ws, *tc = tail + (size_t)c0 * (size_t)tl;
        float *oc = out + c0;
        for (r = 0; r + RB_TILE_ROWS <= B; r += RB_TILE_ROWS)
            RB_TILE(oc + (size_t)r * (size_t)os, os, x + (size_t)r * (size_t)xs, xs, wc, ws, n, tc);
        switch (B - r) {
        case 3: RB_FN(tile_3x4)(oc + (size_t)r * (size_t)os, os, x + (size_t)r * (size_t)xs, xs, wc, ws, n, tc); break;
        case 2: RB_FN(tile_2x4)(oc + (size_t)r * (size_t)os, os, x + (size_t)r * (size_t)xs, xs, wc, ws, n, tc); break;
        case 1: RB_FN(tile_1x4)(oc + (size_t)r * (size_t)os, os, x + (size_t)r * (size_t)xs, xs, wc, ws, n, tc); break;
        default: break;
        }
    }
#else
    (void)tail;
#endif
    for (; c0 < d; c0++)
        for (r = 0; r < B; r++)
            out[(size_t)r * (size_t)os + c0] =
                RB_FN(dot_f32)(w + (size_t)c0 * (size_t)ws, x + (size_t)r * (size_t)xs, n);
}

/* ---- int8 (Q8_0) matrix-matrix product --------------------------------------- */
/* runc.c's matmul_q8: per output, val = 0; for each group g, val += ((float)S_g
 * * ws_g) * xs_g, S_g the int32 dot product of the group's int8 values. Here
 * S_g is summed in float from the int8 values stored as floats: every product
 * and partial sum is an integer below 2^24 (groups of at most 1024), so the
 * float sum is exact, in any order, and equals (float)S_g. That frees the
 * order within a group: the product runs with 8 outputs per vector (weights
 * packed by blocks of 8 outputs, j-major), no horizontal sums; the groups are
 * then folded in runc.c's order.
 *   w[((cb * n) + j) * 8 + lane] = W[cb*8 + lane][j]  (as float)
 *   s[((cb * groups) + g) * 8 + lane] = scale of W[cb*8 + lane]'s group g
 * d is padded to a multiple of 16 outputs (zero weights and scales). */
#if RB_KVEC
/* R rows x 16 outputs (two blocks of 8): group sums t, folded into v. */
#define RB_Q8_ACC(r) rb_v8 v##r##a = {0}, v##r##b = {0}, t##r##a, t##r##b
#define RB_Q8_ZERO(r) (t##r##a = z, t##r##b = z)
#define RB_Q8_MAC(r)                                                                                         \
    do {                                                                                                     \
        const float e_ = xr##r[(size_t)g * (size_t)gs + (size_t)k];                                          \
        t##r##a += qa * e_;                                                                                  \
        t##r##b += qb * e_;                                                                                  \
    } while (0)
#define RB_Q8_FOLD(r)                                                                                        \
    do {                                                                                                     \
        const float z_ = sr##r[g];                                                                           \
        v##r##a += t##r##a * ra * z_;                                                                        \
        v##r##b += t##r##b * rb * z_;                                                                        \
    } while (0)
#define RB_Q8_STORE(r)                                                                                       \
    do {                                                                                                     \
        if (r < rows) {                                                                                      \
            memcpy(o + (size_t)(r) * (size_t)os, &v##r##a, sizeof v##r##a);                                  \
            memcpy(o + (size_t)(r) * (size_t)os + 8, &v##r##b, sizeof v##r##b);                              \
        }                                                                                                    \
    } while (0)

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(q8_tile)(float *restrict o, int os, const float *restrict xq, int xs,
                                                    const float *restrict xsc, int xss, int rows,
                                                    const float *restrict wa, const float *restrict sa, int n,
                                                    int gs)
{
    /* rows past `rows` repeat the last row (computed, not stored) */
    const float *xr0 = xq, *sr0 = xsc;
#if RB_Q8_ROWS >= 2
    const float *xr1 = rows > 1 ? xr0 + xs : xr0, *sr1 = rows > 1 ? sr0 + xss : sr0;
#endif
#if RB_Q8_ROWS >= 4
    const float *xr2 = rows > 2 ? xr1 + xs : xr1, *sr2 = rows > 2 ? sr1 + xss : sr1;
    const float *xr3 = rows > 3 ? xr2 + xs : xr2, *sr3 = rows > 3 ? sr2 + xss : sr2;
#endif
    const int groups = n / gs;
    const float *wb = wa + (size_t)n * 8, *sb = sa + (size_t)groups * 8;
    const rb_v8 z = {0};
    int g, k;
    RB_Q8_ACC(0);
#if RB_Q8_ROWS >= 2
    RB_Q8_ACC(1);
#endif
#if RB_Q8_ROWS >= 4
    RB_Q8_ACC(2);
    RB_Q8_ACC(3);
#endif
    for (g = 0; g < groups; g++) {
        const float *pa = wa + (size_t)g * (size_t)gs * 8, *pb = wb + (size_t)g * (size_t)gs * 8;
        rb_v8 ra, rb;
        RB_Q8_ZERO(0);
#if RB_Q8_ROWS >= 2
        RB_Q8_ZERO(1);
#endif
#if RB_Q8_ROWS >= 4
        RB_Q8_ZERO(2);
        RB_Q8_ZERO(3);
#endif
        for (k = 0; k < gs; k++) {
            const rb_v8 qa = *(const rb_v8 *)(pa + 8 * k), qb = *(const rb_v8 *)(pb + 8 * k);
            RB_Q8_MAC(0);
#if RB_Q8_ROWS >= 2
            RB_Q8_MAC(1);
#endif
#if RB_Q8_ROWS >= 4
            RB_Q8_MAC(2);
            RB_Q8_MAC(3);
#endif
        }
        ra = *(const rb_v8 *)(sa + 8 * g);
        rb = *(const rb_v8 *)(sb + 8 * g);
        RB_Q8_FOLD(0);
#if RB_Q8_ROWS >= 2
        RB_Q8_FOLD(1);
#endif
#if RB_Q8_ROWS >= 4
        RB_Q8_FOLD(2);
        RB_Q8_FOLD(3);
#endif
    }
    RB_Q8_STORE(0);
#if RB_Q8_ROWS >= 2
    RB_Q8_STORE(1);
#endif
#if RB_Q8_ROWS >= 4
    RB_Q8_STORE(2);
    RB_Q8_STORE(3);
#endif
}
#endif

static RB_ATTR void RB_FN(gemm_q8)(float *restrict out, int os, const float *restrict xq, int xs,
                                   const float *restrict xsc, int xss, const float *restrict w,
                                   const float *restrict sc, int B, int n, int dpad, int gs)
{
    int groups = n / gs, cb, r;
    for (cb = 0; cb < dpad / 8; cb += 2) {
        const float *wa = w + (size_t)cb * (size_t)n * 8, *sa = sc + (size_t)cb * (size_t)groups * 8;
#if RB_KVEC
        for (r = 0; r < B; r += RB_Q8_ROWS)
            RB_FN(q8_tile)(out + (size_t)r * (size_t)os + (size_t)cb * 8, os, xq + (size_t)r * (size_t)xs, xs,
                           xsc + (size_t)r * (size_t)xss, xss, B - r < RB_Q8_ROWS ? B - r : RB_Q8_ROWS, wa, sa, n,
                           gs);
#else
        const float *wb = wa + (size_t)n * 8, *sb = sa + (size_t)groups * 8;
        for (r = 0; r < B; r++) {
            const float *x0 = xq + (size_t)r * (size_t)xs, *s0 = xsc + (size_t)r * (size_t)xss;
            float *o0 = out + (size_t)r * (size_t)os + (size_t)cb * 8;
            float v[16], t[16];
            int lane, g, k;
            for (lane = 0; lane < 16; lane++) v[lane] = 0.0f;
            for (g = 0; g < groups; g++) {
                const float *pa = wa + (size_t)g * (size_t)gs * 8, *pb = wb + (size_t)g * (size_t)gs * 8;
                const float *y0 = x0 + (size_t)g * (size_t)gs;
                for (lane = 0; lane < 16; lane++) t[lane] = 0.0f;
                for (k = 0; k < gs; k++)
                    for (lane = 0; lane < 8; lane++) {
                        t[lane] += pa[8 * k + lane] * y0[k];
                        t[8 + lane] += pb[8 * k + lane] * y0[k];
                    }
                for (lane = 0; lane < 8; lane++) {
                    v[lane] += t[lane] * sa[8 * g + lane] * s0[g];
                    v[8 + lane] += t[8 + lane] * sb[8 * g + lane] * s0[g];
                }
            }
            memcpy(o0, v, sizeof v);
        }
#endif
    }
}

/* out = in @ W^T for B rows: quantizes the rows first for int8 weights. */
static RB_ATTR void RB_FN(matmul)(const runc_batch *b, rb_worker *w, float *out, int os, const float *in, int is,
                                  const rb_mat *m, int B)
{
    if (b->q8) {
        int r, gs = b->gs;
        for (r = 0; r < B; r++)
            RB_FN(quantize)(w->xq + (size_t)r * (size_t)b->sX, w->xsc + (size_t)r * (size_t)b->gX,
                            in + (size_t)r * (size_t)is, m->n, gs, w->qab, w->qdiv);
        RB_FN(gemm_q8)(out, os, w->xq, b->sX, w->xsc, b->gX, m->w, m->s, B, m->n, m->dpad, gs);
    } else {
        RB_FN(gemm_f32)(out, os, in, is, m->w, m->stride, m->tail, B, m->n, m->d);
    }
}

/* ---- attention ------------------------------------------------------------------ */

/* RoPE as runc.c's rope(): channel pairs of each head by the position's angles. */
static RB_ATTR void RB_FN(rope)(float *restrict vec, int n_heads, int head_size, const float *restrict cosv,
                                const float *restrict sinv)
{
    int h, i;
    for (h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * (size_t)head_size;
        for (i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cosv[i] - v1 * sinv[i];
            v[2 * i + 1] = v0 * sinv[i] + v1 * cosv[i];
        }
    }
}

/* Row r of this step: rotate q and k, store k and v in its slot's cache at its
 * position, and attend over positions 0..pos; the heads' outputs go to xb[r].
 * Heads are the vector lanes: keys are stored per position as (head_size,
 * n_kv_heads), scores as (position, head) with head h at lane (h % kv_mul) *
 * n_kv_heads + h / kv_mul, so that the max, the exp, the sum and the division
 * of all heads' softmaxes are vector operations, each head's sums still
 * formed in runc.c's order (over channels, then over positions). Loops with
 * a loop-carried sum run over 8 lanes at a time in local accumulators (kept
 * in registers); their reads may run up to 7 floats past the last head or
 * channel, into other data of the arena (padded at its end), whose lanes are
 * never stored. */
static RB_ATTR void RB_FN(attend)(const runc_batch *b, rb_worker *w, int r, int l)
{
    const int D = b->D, KV = b->KV, hs = b->hs, nh = b->nh, nkv = b->nkv, kv_mul = nh / nkv;
    const int pos = w->row_pos[r], n = pos + 1;
    float *q = w->qkv + (size_t)r * (size_t)b->sQKV, *k = q + D, *v = k + KV;
    float *kc = rb_slot_kv(b, w, w->row_slot[r], l), *vc = kc + (size_t)b->context * (size_t)KV;
    float *out = w->xb + (size_t)r * (size_t)b->sD;
    float *restrict att = w->att, *restrict qt = w->qt, *restrict sum = w->hsum;
    const float *cosv = b->rope_cos + (size_t)pos * (size_t)(hs / 2);
    const float *sinv = b->rope_sin + (size_t)pos * (size_t)(hs / 2);
    const float scale = b->att_scale;
    int h, h0, i, i0, t, j, g, g0, kk;

    RB_FN(rope)(q, nh, hs, cosv, sinv);
    RB_FN(rope)(k, nkv, hs, cosv, sinv);
    {
        float *restrict kp = kc + (size_t)pos * (size_t)KV;
        for (g = 0; g < nkv; g++)
            for (i = 0; i < hs; i++) kp[(size_t)i * (size_t)nkv + (size_t)g] = k[(size_t)g * (size_t)hs + (size_t)i];
        memcpy(vc + (size_t)pos * (size_t)KV, v, (size_t)KV * sizeof(float));
    }
    /* q transposed: qt[(i * kv_mul + j) * nkv + g] = q of head g * kv_mul + j, channel i */
    for (g = 0; g < nkv; g++)
        for (j = 0; j < kv_mul; j++)
            for (i = 0; i < hs; i++)
                qt[((size_t)i * (size_t)kv_mul + (size_t)j) * (size_t)nkv + (size_t)g] =
                    q[((size_t)g * (size_t)kv_mul + (size_t)j) * (size_t)hs + (size_t)i];

    /* scores: att[t * nh + j * nkv + g] = (q . k) * scale, summed over channels in order */
    for (t = 0; t < n; t++) {
        const float *restrict kt = kc + (size_t)t * (size_t)KV;
        for (j = 0; j < kv_mul; j++)
            for (g0 = 0; g0 < nkv; g0 += 8) {
                float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
                float *restrict a = att + (size_t)t * (size_t)nh + (size_t)j * (size_t)nkv + (size_t)g0;
                const int gn = nkv - g0 < 8 ? nkv - g0 : 8;
                for (i = 0; i < hs; i++) {
                    const float *restrict qi = qt + ((size_t)i * (size_t)kv_mul + (size_t)j) * (size_t)nkv + g0;
                    const float *restrict ki = kt + (size_t)i * (size_t)nkv + g0;
                    for (kk = 0; kk < 8; kk++) acc[kk] += qi[kk] * ki[kk];
                }
                for (kk = 0; kk < gn; kk++) a[kk] = acc[kk] * scale;
            }
    }
    /* softmax of each head over t = 0..pos (runc.c's softmax, lanes = heads) */
    for (h0 = 0; h0 < nh; h0 += 8) {
        const int hn = nh - h0 < 8 ? nh - h0 : 8;
        float mx[8];
        for (kk = 0; kk < 8; kk++) mx[kk] = att[h0 + kk];
        for (t = 1; t < n; t++) {
            const float *restrict a = att + (size_t)t * (size_t)nh + (size_t)h0;
            for (kk = 0; kk < 8; kk++) mx[kk] = a[kk] > mx[kk] ? a[kk] : mx[kk];
        }
        for (kk = 0; kk < hn; kk++) sum[h0 + kk] = mx[kk]; /* the maxima, for the next loop */
    }
    for (t = 0; t < n; t++) {
        float *restrict a = att + (size_t)t * (size_t)nh;
        for (h = 0; h < nh; h++) a[h] = runc_expf(a[h] - sum[h]);
    }
    for (h0 = 0; h0 < nh; h0 += 8) {
        const int hn = nh - h0 < 8 ? nh - h0 : 8;
        float sm[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (t = 0; t < n; t++) {
            const float *restrict a = att + (size_t)t * (size_t)nh + (size_t)h0;
            for (kk = 0; kk < 8; kk++) sm[kk] += a[kk];
        }
        for (kk = 0; kk < hn; kk++) sum[h0 + kk] = sm[kk];
    }
    for (t = 0; t < n; t++) {
        float *restrict a = att + (size_t)t * (size_t)nh;
        for (h = 0; h < nh; h++) a[h] /= sum[h];
    }
    /* outputs: head h = g * kv_mul + j is the sum over t of its weight times v of kv head g */
    for (h = 0; h < nh; h++) {
        const int lane = (h % kv_mul) * nkv + h / kv_mul;
        const float *restrict vh = vc + (size_t)(h / kv_mul) * (size_t)hs;
        float *restrict oh = out + (size_t)h * (size_t)hs;
        for (i0 = 0; i0 < hs; i0 += 8) {
            const int in = hs - i0 < 8 ? hs - i0 : 8;
            float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            for (t = 0; t < n; t++) {
                const float at = att[(size_t)t * (size_t)nh + (size_t)lane];
                const float *restrict vt = vh + (size_t)t * (size_t)KV + (size_t)i0;
                for (kk = 0; kk < 8; kk++) acc[kk] += at * vt[kk];
            }
            for (kk = 0; kk < in; kk++) oh[i0 + kk] = acc[kk];
        }
    }
}

/* ---- one step ------------------------------------------------------------------- */

/* Advance rows 0..B-1 of worker w by one token each (w->row_tok at
 * w->row_pos, in slot w->row_slot), and compute logits for rows w->lrow[0..BL)
 * into w->logits (row j for lrow[j]); with w->want_lp, also w->lp[j], the
 * log-probability of each row's argmax token (log-softmax at temperature 1). */
static RB_ATTR void RB_FN(step)(const runc_batch *b, rb_worker *w, int B, int BL)
{
    const runc_model *m = b->model;
    const int D = b->D, H = b->H, sD = b->sD;
    const float eps = m->cfg.norm_eps;
    int r, l, i;

    for (r = 0; r < B; r++) {
        float *x = w->x + (size_t)r * (size_t)sD;
        int token = w->row_tok[r];
        if (b->q8) {
            const int gs = b->gs;
            const int8_t *q = m->tok.q + (size_t)token * (size_t)D;
            const float *sc = m->tok.s + (size_t)token * (size_t)(D / gs);
            for (i = 0; i < D; i++) x[i] = (float)q[i] * sc[i / gs];
        } else {
            memcpy(x, m->tok.f + (size_t)token * (size_t)D, (size_t)D * sizeof(float));
        }
    }

    for (l = 0; l < b->L; l++) {
        const rb_layer *ly = &b->layers[l];
        for (r = 0; r < B; r++)
            RB_FN(rmsnorm)(w->xb + (size_t)r * (size_t)sD, w->x + (size_t)r * (size_t)sD,
                           m->rms_att + (size_t)l * (size_t)D, D, eps);
        RB_FN(matmul)(b, w, w->qkv, b->sQKV, w->xb, sD, &ly->qkv, B);
        for (r = 0; r < B; r++) RB_FN(attend)(b, w, r, l);
        RB_FN(matmul)(b, w, w->xb2, sD, w->xb, sD, &ly->wo, B);
        for (r = 0; r < B; r++) {
            float *restrict x = w->x + (size_t)r * (size_t)sD;
            const float *restrict y = w->xb2 + (size_t)r * (size_t)sD;
            for (i = 0; i < D; i++) x[i] += y[i];
        }
        for (r = 0; r < B; r++)
            RB_FN(rmsnorm)(w->xb + (size_t)r * (size_t)sD, w->x + (size_t)r * (size_t)sD,
                           m->rms_ffn + (size_t)l * (size_t)D, D, eps);
        RB_FN(matmul)(b, w, w->h13, b->s13, w->xb, sD, &ly->w13, B);
        for (r = 0; r < B; r++) {
            const float *restrict h1 = w->h13 + (size_t)r * (size_t)b->s13, *restrict h3 = h1 + H;
            float *restrict hb = w->hb + (size_t)r * (size_t)b->sH;
            for (i = 0; i < H; i++) {
                float v = h1[i];
                hb[i] = v / (1.0f + runc_expf(-v)) * h3[i];
            }
        }
        RB_FN(matmul)(b, w, w->xb, sD, w->hb, b->sH, &ly->w2, B);
        for (r = 0; r < B; r++) {
            float *restrict x = w->x + (size_t)r * (size_t)sD;
            const float *restrict y = w->xb + (size_t)r * (size_t)sD;
            for (i = 0; i < D; i++) x[i] += y[i];
        }
    }

    if (BL > 0) {
        int j;
        for (j = 0; j < BL; j++)
            RB_FN(rmsnorm)(w->xb + (size_t)j * (size_t)sD, w->x + (size_t)w->lrow[j] * (size_t)sD, m->rms_final,
                           D, eps);
        RB_FN(matmul)(b, w, w->logits, b->sV, w->xb, sD, &b->cls, BL);
        if (w->want_lp) {
            const int V = b->V;
            float *restrict e = w->tmpv;
            for (j = 0; j < BL; j++) {
                const float *restrict lg = w->logits + (size_t)j * (size_t)b->sV;
                float max = lg[0], sum = 0.0f;
                for (i = 1; i < V; i++)
                    if (lg[i] > max) max = lg[i];
                for (i = 0; i < V; i++) e[i] = runc_expf(lg[i] - max);
                for (i = 0; i < V; i++) sum += e[i];
                w->lp[j] = -logf(sum); /* log p of the argmax: its logit is max */
            }
        }
    }
}

#if RB_KVEC
#undef RB_TILE
#endif
