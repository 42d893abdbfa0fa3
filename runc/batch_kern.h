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

/* runc.c's rmsnorm of B rows: each row's sum of squares in order, eight
 * rows' sums at a time (independent chains the CPU overlaps), then weight *
 * (scale * x). */
static RB_ATTR void RB_FN(rmsnorm_rows)(float *restrict out, int os, const float *restrict x, int xs,
                                        const float *restrict weight, int B, int n, float eps)
{
    int r0, r, i;
    for (r0 = 0; r0 < B; r0 += 8) {
        const int rn = B - r0 < 8 ? B - r0 : 8;
        const float *xr[8];
        float ss[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (r = 0; r < 8; r++) {
            const int row = r < rn ? r0 + r : r0; /* spare lanes repeat a row */
            xr[r] = x + (size_t)row * (size_t)xs;
        }
        for (i = 0; i < n; i++)
            for (r = 0; r < 8; r++) ss[r] += xr[r][i] * xr[r][i];
        for (r = 0; r < rn; r++) {
            const float scale = 1.0f / sqrtf(ss[r] / (float)n + eps);
            float *restrict o = out + (size_t)(r0 + r) * (size_t)os;
            const float *restrict xx = xr[r];
            for (i = 0; i < n; i++) o[i] = weight[i] * (scale * xx[i]);
        }
    }
}

/* runc.c's quantize_q8 (runq.c's rounding: roundf(x / scale), clamped to
 * +-127, NaN to 0), in flat loops the compiler vectorises: the magnitudes'
 * bits (NaN as 0: runc.c's max never picks a NaN; for non-negative floats the
 * integer order is the float order), each group's maximum and scale, and then
 * every value, rounded by truncation and a half test (equal to roundf for
 * |v| <= 128) with integer masks instead of float compares, which compilers
 * may not if-convert. Dividing by 1 where the scale is 0 gives runc.c's zeros
 * (such a group holds only zeros, NaNs, or subnormals too small to round to
 * anything but 0). Quantized values are stored as
 * floats (exact small integers) for the float-emulated products, or (VNNI)
 * as bytes + 128 in u. One row; quantize_rows below does many rows at once for
 * groups of 2, 4 or 8. ab and div: scratch of n entries. */
static RB_ATTR void RB_FN(quantize)(float *restrict q, float *restrict scales, const float *restrict x, int n, int gs,
                                    uint32_t *restrict ab, float *restrict div, uint8_t *restrict u)
{
    int g, i, groups = n / gs;
    for (i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        b &= 0x7FFFFFFFu;
        ab[i] = b > 0x7F800000u ? 0u : b;
    }
    for (g = 0; g < groups; g++) {
        const uint32_t *restrict ag = ab + (size_t)g * (size_t)gs;
        float *restrict dg = div + (size_t)g * (size_t)gs;
        uint32_t wb = 0;
        float wmax, scale, d;
        for (i = 0; i < gs; i++) wb = ag[i] > wb ? ag[i] : wb;
        memcpy(&wmax, &wb, sizeof wmax);
        scale = wmax / 127.0f;
        scales[g] = scale;
        d = scale != 0.0f ? scale : 1.0f; /* 0 for all zeros, or subnormals below 64 * 2^-149: runc.c's 0s */
        for (i = 0; i < gs; i++) dg[i] = d;
    }
#define RB_QUANTIZE_VALUE                                                                                   \
    float v = x[i] / div[i], d;                                                                              \
    uint32_t vb, av, m;                                                                                      \
    int32_t ti;                                                                                              \
    memcpy(&vb, &v, sizeof vb);                                                                              \
    av = vb & 0x7FFFFFFFu;                                                                                   \
    m = 0u - (uint32_t)(av > 0x43000000u); /* |v| > 128, inf, NaN: +-128 */                                  \
    vb = (vb & ~m) | (((vb & 0x80000000u) | 0x43000000u) & m);                                               \
    m = 0u - (uint32_t)(av > 0x7F800000u); /* NaN: 0 */                                                      \
    vb &= ~m;                                                                                                \
    memcpy(&v, &vb, sizeof v);                                                                               \
    ti = (int32_t)v;   /* truncation */                                                                      \
    d = v - (float)ti; /* exact */                                                                           \
    ti += (int32_t)(d >= 0.5f) - (int32_t)(d <= -0.5f);                                                      \
    ti = ti > 127 ? 127 : ti;                                                                                \
    ti = ti < -127 ? -127 : ti
    if (u) { /* VNNI: as bytes, value + 128 */
        for (i = 0; i < n; i++) {
            RB_QUANTIZE_VALUE;
            u[i] = (uint8_t)(ti + 128);
        }
    } else {
        for (i = 0; i < n; i++) {
            RB_QUANTIZE_VALUE;
            q[i] = (float)ti;
        }
    }
#undef RB_QUANTIZE_VALUE
}

#if RB_KVEC
/* quantize's steps for one vector of 8 values holding whole groups of gs (2,
 * 4 or 8), in registers, lane-wise: NaN magnitudes as 0, the group maxima by
 * a butterfly, scale and divisor, the quotient rounded by truncation and the
 * half test. Returns the integers, and the scales in *scale (each group's in
 * all its lanes). A quotient is at most 127.00001 in size (the divisor is
 * max / 127 rounded) but for infinities, NaNs and subnormal groups (where
 * max / 127 may round far down), so the clamps to +-128 before rounding and
 * to +-127 after run only in a vector with a quotient above 127 in size. */
static RB_ATTR RB_ALWAYS_INLINE rb_v8i RB_FN(quantize_vec)(rb_v8 xv, int gs, rb_v8 *scale)
{
    const rb_v8 one = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    const rb_v8 half = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, nhalf = -half;
    const rb_v8i hi = {127, 127, 127, 127, 127, 127, 127, 127}, lo = -hi;
    rb_v8 d, v, f;
    rb_v8u a, c, m, vb, av;
    rb_v8i ti;
    int special;
    a = (rb_v8u)xv & 0x7FFFFFFFu;
    a &= ~(rb_v8u)(a > 0x7F800000u);
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
    *scale = (rb_v8)a / 127.0f;
    m = (rb_v8u)(*scale != 0.0f);
    d = (rb_v8)(((rb_v8u)*scale & m) | ((rb_v8u)one & ~m));
    v = xv / d;
    special = _mm256_movemask_ps((__m256)(((rb_v8u)v & 0x7FFFFFFFu) > 0x42FE0000u)); /* |v| > 127, inf, NaN */
    if (special) {
        vb = (rb_v8u)v;
        av = vb & 0x7FFFFFFFu;
        m = (rb_v8u)(av > 0x43000000u); /* |v| > 128, inf, NaN: +-128 */
        vb = (vb & ~m) | (((vb & 0x80000000u) | 0x43000000u) & m);
        vb &= ~(rb_v8u)(av > 0x7F800000u); /* NaN: 0 */
        v = (rb_v8)vb;
    }
    ti = __builtin_convertvector(v, rb_v8i);    /* truncation */
    f = v - __builtin_convertvector(ti, rb_v8); /* exact */
    ti = ti - (rb_v8i)(f >= half) + (rb_v8i)(f <= nhalf); /* a true compare is -1 */
    if (special) {
        m = (rb_v8u)(ti > hi);
        ti = (rb_v8i)(((rb_v8u)ti & ~m) | ((rb_v8u)hi & m));
        m = (rb_v8u)(ti < lo);
        ti = (rb_v8i)(((rb_v8u)ti & ~m) | ((rb_v8u)lo & m));
    }
    return ti;
}

/* Store lanes 0..t-1 of quantize_vec's integers (floats in q, or bytes + 128
 * in u) and the scales of their t / gs groups. */
static RB_ATTR RB_ALWAYS_INLINE void RB_FN(quantize_store)(float *restrict q, uint8_t *restrict u,
                                                            float *restrict sc, rb_v8i ti, rb_v8 scale, int gs,
                                                            int t)
{
    const rb_v8i bias = {128, 128, 128, 128, 128, 128, 128, 128};
    int k;
    for (k = 0; k < t / gs; k++) sc[k] = scale[k * gs];
    if (u) {
        const rb_v8b bytes = __builtin_convertvector(ti + bias, rb_v8b);
        memcpy(u, &bytes, (size_t)t);
    } else {
        const rb_v8 f = __builtin_convertvector(ti, rb_v8);
        memcpy(q, &f, (size_t)t * sizeof(float));
    }
}

/* quantize for B rows at once, for groups of gs = 2, 4 or 8 (a constant
 * where it is inlined): every vector of 8 values holds whole groups, so it is
 * loaded once and quantized in registers, without quantize's passes through
 * scratch memory and its call per row. A row's last vector may hold fewer
 * than 8 values (still whole groups: gs divides n and 8): it is read whole
 * from the row's padding (its own groups, so it changes nothing) and only its
 * own values are stored. Output as quantize: floats in q, or (VNNI) bytes +
 * 128 in u; rows of qs values, scales in rows of ss. */
static RB_ATTR RB_ALWAYS_INLINE void RB_FN(quantize_rows_gs)(float *restrict q, uint8_t *restrict u, int qs,
                                                              float *restrict scales, int ss,
                                                              const float *restrict x, int xs, int B, int n,
                                                              const int gs)
{
    const int n8 = n & ~7;
    int r, i;
    for (r = 0; r < B; r++) {
        const float *restrict xr = x + (size_t)r * (size_t)xs;
        float *restrict sr = scales + (size_t)r * (size_t)ss;
        float *restrict qr = u ? NULL : q + (size_t)r * (size_t)qs;
        uint8_t *restrict ur = u ? u + (size_t)r * (size_t)qs : NULL;
        for (i = 0; i < n; i += 8) {
            rb_v8 xv, scale;
            rb_v8i ti;
            memcpy(&xv, xr + i, sizeof xv);
            ti = RB_FN(quantize_vec)(xv, gs, &scale);
            if (i < n8) /* a constant size: the stores stay in registers */
                RB_FN(quantize_store)(qr ? qr + i : NULL, ur ? ur + i : NULL, sr + i / gs, ti, scale, gs, 8);
            else
                RB_FN(quantize_store)(qr ? qr + i : NULL, ur ? ur + i : NULL, sr + i / gs, ti, scale, gs, n - i);
        }
    }
}

static RB_ATTR void RB_FN(quantize_rows)(float *restrict q, uint8_t *restrict u, int qs, float *restrict scales,
                                         int ss, const float *restrict x, int xs, int B, int n, int gs)
{
    if (gs == 2)
        RB_FN(quantize_rows_gs)(q, u, qs, scales, ss, x, xs, B, n, 2);
    else if (gs == 4)
        RB_FN(quantize_rows_gs)(q, u, qs, scales, ss, x, xs, B, n, 4);
    else
        RB_FN(quantize_rows_gs)(q, u, qs, scales, ss, x, xs, B, n, 8);
}
#endif

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
/* A row's 4 sums plus its tail columns j..n-1 (the 4 outputs' packed tail
 * weights), added in order. */
static RB_ATTR RB_ALWAYS_INLINE rb_v4 RB_FN(add_tail)(rb_v4 sum, const float *restrict xr, int j, int n,
                                                      const float *restrict tail)
{
    int jj;
    for (jj = 0; j + jj < n; jj++) {
        rb_v4 wt;
        memcpy(&wt, tail + 4 * jj, sizeof wt);
        sum += wt * xr[j + jj];
    }
    return sum;
}

/* finish rows (ra, rb) (rb may be a dummy row of zero accumulators) */
#define RB_FINISH(ra, rb, oa, ob, xa, xb, two)                                                               \
    do {                                                                                                     \
        rb_v8 s_;                                                                                            \
        rb_v4 lo_, hi_;                                                                                      \
        RB_REDUCE8(s_, a##ra##0, a##ra##1, a##ra##2, a##ra##3, a##rb##0, a##rb##1, a##rb##2, a##rb##3);      \
        lo_ = RB_FN(add_tail)(RB_SHUF(s_, s_, 0, 1, 2, 3), xa, j, n, tail);                                  \
        memcpy(oa, &lo_, sizeof lo_);                                                                        \
        if (two) {                                                                                           \
            hi_ = RB_FN(add_tail)(RB_SHUF(s_, s_, 4, 5, 6, 7), xb, j, n, tail);                              \
            memcpy(ob, &hi_, sizeof hi_);                                                                    \
        }                                                                                                    \
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

#ifdef RB_Z16
/* AVX-512: 8 rows x 4 outputs in 16-float vectors. Each vector holds two
 * outputs' 8-float accumulators of one row (outputs c and c+1 of the tile's
 * pair), summing exactly as an 8-float accumulator above does: the same
 * products added in the same order, lane by lane; then the same reduction
 * within each half. The weights come packed for it (wz: per 4 outputs and 8
 * inputs, the 4 outputs' 8 weights one after another), so a pair of outputs
 * is one load; a row's 8 inputs are loaded into both halves by a broadcast.
 * One 16-float multiply and add do the work of two 8-float ones, and one
 * reduction serves twice the sums. */
typedef float rb_v16 __attribute__((vector_size(64)));
/* RB_REDUCE8's shuffles, within each 8-float half */
#define RB_L16(i, h) ((i) < 8 ? (i) + (h) : (i) + 8 + (h)) /* lane i of an 8-float pair -> of a 16-float pair */
#define RB_SHUF16(x, y, i0, i1, i2, i3, i4, i5, i6, i7)                                                      \
    RB_SHUF(x, y, RB_L16(i0, 0), RB_L16(i1, 0), RB_L16(i2, 0), RB_L16(i3, 0), RB_L16(i4, 0), RB_L16(i5, 0),    \
            RB_L16(i6, 0), RB_L16(i7, 0), RB_L16(i0, 8), RB_L16(i1, 8), RB_L16(i2, 8), RB_L16(i3, 8),         \
            RB_L16(i4, 8), RB_L16(i5, 8), RB_L16(i6, 8), RB_L16(i7, 8))
#define RB_PAIRSUM16(x, y, i0, i1, i2, i3, i4, i5, i6, i7, k0, k1, k2, k3, k4, k5, k6, k7)                     \
    (RB_SHUF16(x, y, i0, i1, i2, i3, i4, i5, i6, i7) + RB_SHUF16(x, y, k0, k1, k2, k3, k4, k5, k6, k7))
#define RB_REDUCE8Z(out, a, b, c, d, e, f, g, h)                                                             \
    do {                                                                                                      \
        rb_v16 z_ae = RB_PAIRSUM16(a, e, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);               \
        rb_v16 z_bf = RB_PAIRSUM16(b, f, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);               \
        rb_v16 z_cg = RB_PAIRSUM16(c, g, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);               \
        rb_v16 z_dh = RB_PAIRSUM16(d, h, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);               \
        rb_v16 z_p = RB_PAIRSUM16(z_ae, z_bf, 0, 2, 8, 10, 4, 6, 12, 14, 1, 3, 9, 11, 5, 7, 13, 15);          \
        rb_v16 z_q = RB_PAIRSUM16(z_cg, z_dh, 0, 2, 8, 10, 4, 6, 12, 14, 1, 3, 9, 11, 5, 7, 13, 15);          \
        (out) = RB_PAIRSUM16(z_p, z_q, 0, 2, 8, 10, 4, 6, 12, 14, 1, 3, 9, 11, 5, 7, 13, 15);                 \
    } while (0)

/* Row k (0-3) of a reduced block: its outputs c, c+1, c+2, c+3 sit in lanes
 * 2k, 8+2k, 2k+1, 9+2k; then the tail columns added in order, stored at o. */
#define RB_FINISH_Z(o, s, k, xr)                                                                             \
    do {                                                                                                      \
        const rb_v4 sum_ = RB_FN(add_tail)(RB_SHUF(s, s, 2 * (k), 8 + 2 * (k), 2 * (k) + 1, 9 + 2 * (k)), xr, j, \
                                           n, tail);                                                          \
        memcpy(o, &sum_, sizeof sum_);                                                                        \
    } while (0)

#define RB_ACCZ(r) rb_v16 z##r##a = {0}, z##r##b = {0}
#define RB_MACZ(r)                                                                                           \
    do {                                                                                                      \
        const rb_v16 xv = (rb_v16)_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)(xr[r] + j)));     \
        z##r##a += wa * xv;                                                                                   \
        z##r##b += wb * xv;                                                                                   \
    } while (0)

static RB_ATTR RB_ALWAYS_INLINE void RB_FN(tile_8x4z)(float *restrict o, int os, const float *restrict x, int xs,
                                                      const float *restrict wz, int n,
                                                      const float *restrict tail)
{
    const float *xr[8];
    rb_v16 s;
    int j = 0, r;
    RB_ACCZ(0);
    RB_ACCZ(1);
    RB_ACCZ(2);
    RB_ACCZ(3);
    RB_ACCZ(4);
    RB_ACCZ(5);
    RB_ACCZ(6);
    RB_ACCZ(7);
    for (r = 0; r < 8; r++) xr[r] = x + (size_t)r * (size_t)xs;
    for (; j + 8 <= n; j += 8) {
        rb_v16 wa, wb;
        memcpy(&wa, wz + 4 * (size_t)j, sizeof wa);
        memcpy(&wb, wz + 4 * (size_t)j + 16, sizeof wb);
        RB_MACZ(0);
        RB_MACZ(1);
        RB_MACZ(2);
        RB_MACZ(3);
        RB_MACZ(4);
        RB_MACZ(5);
        RB_MACZ(6);
        RB_MACZ(7);
    }
    RB_REDUCE8Z(s, z0a, z0b, z1a, z1b, z2a, z2b, z3a, z3b);
    RB_FINISH_Z(o, s, 0, xr[0]);
    RB_FINISH_Z(o + (size_t)os, s, 1, xr[1]);
    RB_FINISH_Z(o + 2 * (size_t)os, s, 2, xr[2]);
    RB_FINISH_Z(o + 3 * (size_t)os, s, 3, xr[3]);
    RB_REDUCE8Z(s, z4a, z4b, z5a, z5b, z6a, z6b, z7a, z7b);
    RB_FINISH_Z(o + 4 * (size_t)os, s, 0, xr[4]);
    RB_FINISH_Z(o + 5 * (size_t)os, s, 1, xr[5]);
    RB_FINISH_Z(o + 6 * (size_t)os, s, 2, xr[6]);
    RB_FINISH_Z(o + 7 * (size_t)os, s, 3, xr[7]);
}
#undef RB_L16
#undef RB_SHUF16
#undef RB_PAIRSUM16
#undef RB_REDUCE8Z
#undef RB_FINISH_Z
#undef RB_ACCZ
#undef RB_MACZ
#endif

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
                                    const float *restrict w, int ws, const float *restrict wz,
                                    const float *restrict tail, int B, int n, int d)
{
    int c0 = 0, r;
#ifndef RB_Z16
    (void)wz; /* NULL: only the AVX-512 kernels have the 16-float tile */
#endif
#if RB_KVEC
    const int tl = n % 8;
    for (; c0 + 4 <= d; c0 += 4) {
        const float *wc = w + (size_t)c0 * (size_t)ws, *tc = tail + (size_t)c0 * (size_t)tl;
        float *oc = out + c0;
        r = 0;
#ifdef RB_Z16
        if (wz)
            for (; r + 8 <= B; r += 8)
                RB_FN(tile_8x4z)(oc + (size_t)r * (size_t)os, os, x + (size_t)r * (size_t)xs, xs,
                                 wz + (size_t)c0 * (size_t)(n / 8 * 8), n, tc);
#endif
        for (; r + RB_TILE_ROWS <= B; r += RB_TILE_ROWS)
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
/* the group sums: integers below 2^24 at every step, so a fused multiply-add
 * (RB_FMA, where the instruction set has one) gives them exactly as well */
#define RB_Q8_MAC(r)                                                                                         \
    do {                                                                                                     \
        const float e_ = xr##r[(size_t)g * (size_t)gs + (size_t)k];                                          \
        const rb_v8 ev_ = {e_, e_, e_, e_, e_, e_, e_, e_};                                                  \
        t##r##a = RB_FMA(qa, ev_, t##r##a);                                                                  \
        t##r##b = RB_FMA(qb, ev_, t##r##b);                                                                  \
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
    (void)xs;
    (void)xss;
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

#if defined(RB_HAS_VNNI) && RB_HAS_VNNI
/* int8 by VNNI: vpdpbusd adds, per 32-bit lane, four products of unsigned
 * bytes (the activations + 128) by signed ones (the weights): lanes are 8
 * outputs, each step 4 inputs of a group. Starting each group's sums at
 * -128 x the weights' sum (winit) leaves exactly the int32 dot product of
 * runc.c's matmul_q8; then the same float folding of the groups. Rows of 4
 * (or fewer) x 16 outputs. */
static RB_ATTR void RB_FN(gemm_q8v)(float *restrict out, int os, const uint8_t *restrict xu, int xs,
                                    const float *restrict xsc, int xss, const int8_t *restrict w,
                                    const int32_t *restrict winit, const float *restrict sc, int B, int n, int dpad,
                                    int gs)
{
    const int groups = n / gs, quads = gs / 4;
    int cb, r0, g, qd, r;
    for (cb = 0; cb < dpad / 8; cb += 2) {
        const int8_t *wa = w + (size_t)cb * (size_t)(n / 4) * 32, *wb = wa + (size_t)(n / 4) * 32;
        const int32_t *ia = winit + (size_t)cb * (size_t)groups * 8, *ib = ia + (size_t)groups * 8;
        const float *sa = sc + (size_t)cb * (size_t)groups * 8, *sb = sa + (size_t)groups * 8;
        for (r0 = 0; r0 < B; r0 += 4) {
            const int rows = B - r0 < 4 ? B - r0 : 4;
            const uint8_t *xr[4];
            const float *sr[4];
            rb_v8 va[4], vb[4];
            for (r = 0; r < 4; r++) {
                const int row = r0 + (r < rows ? r : 0);
                xr[r] = xu + (size_t)row * (size_t)xs;
                sr[r] = xsc + (size_t)row * (size_t)xss;
                va[r] = (rb_v8){0};
                vb[r] = (rb_v8){0};
            }
            for (g = 0; g < groups; g++) {
                const __m256i i0 = _mm256_loadu_si256((const __m256i *)(ia + 8 * (size_t)g));
                const __m256i i1 = _mm256_loadu_si256((const __m256i *)(ib + 8 * (size_t)g));
                __m256i ta[4], tb[4];
                rb_v8 ra, rb;
                for (r = 0; r < 4; r++) {
                    ta[r] = i0;
                    tb[r] = i1;
                }
                for (qd = 0; qd < quads; qd++) {
                    const size_t at = (size_t)g * (size_t)quads + (size_t)qd;
                    const __m256i qa = _mm256_loadu_si256((const __m256i *)(wa + at * 32));
                    const __m256i qb = _mm256_loadu_si256((const __m256i *)(wb + at * 32));
                    for (r = 0; r < 4; r++) {
                        int32_t four;
                        __m256i xv;
                        memcpy(&four, xr[r] + at * 4, sizeof four);
                        xv = _mm256_set1_epi32(four);
                        ta[r] = _mm256_dpbusd_epi32(ta[r], xv, qa);
                        tb[r] = _mm256_dpbusd_epi32(tb[r], xv, qb);
                    }
                }
                memcpy(&ra, sa + 8 * (size_t)g, sizeof ra);
                memcpy(&rb, sb + 8 * (size_t)g, sizeof rb);
                for (r = 0; r < 4; r++) {
                    const float z = sr[r][g];
                    va[r] += (rb_v8)_mm256_cvtepi32_ps(ta[r]) * ra * z;
                    vb[r] += (rb_v8)_mm256_cvtepi32_ps(tb[r]) * rb * z;
                }
            }
            for (r = 0; r < rows; r++) {
                float *o = out + (size_t)(r0 + r) * (size_t)os + (size_t)cb * 8;
                memcpy(o, &va[r], sizeof va[r]);
                memcpy(o + 8, &vb[r], sizeof vb[r]);
            }
        }
    }
}
#endif

/* out = in @ W^T for B rows: quantizes the rows first for int8 weights. */
static RB_ATTR void RB_FN(matmul)(const runc_batch *b, rb_worker *w, float *out, int os, const float *in, int is,
                                  const rb_mat *m, int B)
{
    if (b->q8) {
        const int gs = b->gs;
        float *xq = b->vnni ? NULL : w->xq; /* floats for gemm_q8, or bytes + 128 for gemm_q8v */
        uint8_t *xu = b->vnni ? w->xu : NULL;
        int r;
#if RB_KVEC
        if (gs == 2 || gs == 4 || gs == 8)
            RB_FN(quantize_rows)(xq, xu, b->sX, w->xsc, b->gX, in, is, B, m->n, gs);
        else
#endif
            for (r = 0; r < B; r++)
                RB_FN(quantize)(xq ? xq + (size_t)r * (size_t)b->sX : NULL, w->xsc + (size_t)r * (size_t)b->gX,
                                in + (size_t)r * (size_t)is, m->n, gs, w->qab, w->qdiv,
                                xu ? xu + (size_t)r * (size_t)b->sX : NULL);
#if defined(RB_HAS_VNNI) && RB_HAS_VNNI
        if (b->vnni) {
            RB_FN(gemm_q8v)(out, os, xu, b->sX, w->xsc, b->gX, m->wi, m->winit, m->s, B, m->n, m->dpad, gs);
            return;
        }
#endif
        RB_FN(gemm_q8)(out, os, xq, b->sX, w->xsc, b->gX, m->w, m->s, B, m->n, m->dpad, gs);
    } else {
        RB_FN(gemm_f32)(out, os, in, is, m->w, m->stride, m->wz, m->tail, B, m->n, m->d);
    }
}

/* ---- attention ------------------------------------------------------------------ */

/* RoPE as runc.c's rope(): channel pairs of each head by the position's
 * angles. With the vector types (head_size a multiple of 8), 8 channels at a
 * time against the position's expanded tables, c = (cos_i, cos_i), s =
 * (-sin_i, +sin_i): v * c + swap_pairs(v) * s is v0 cos - v1 sin, v1 cos +
 * v0 sin, the same roundings as runc.c's (a + (-b) = a - b exactly, and
 * addition commutes). */
static RB_ATTR void RB_FN(rope)(float *restrict vec, int n_heads, int head_size, const float *restrict cosv,
                                const float *restrict sinv, const float *restrict cx, const float *restrict sx)
{
    int h, i;
#if RB_KVEC
    if (head_size % 8 == 0) {
        for (h = 0; h < n_heads; h++)
            for (i = 0; i < head_size; i += 8) {
                float *v = vec + (size_t)h * (size_t)head_size + (size_t)i;
                rb_v8 x, c, sn, sw;
                memcpy(&x, v, sizeof x);
                memcpy(&c, cx + i, sizeof c);
                memcpy(&sn, sx + i, sizeof sn);
                sw = RB_SHUF(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
                x = x * c + sw * sn;
                memcpy(v, &x, sizeof x);
            }
        return;
    }
#endif
    (void)cx;
    (void)sx;
    for (h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * (size_t)head_size;
        for (i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cosv[i] - v1 * sinv[i];
            v[2 * i + 1] = v0 * sinv[i] + v1 * cosv[i];
        }
    }
}


/* RoPE on one row's query and key heads at position pos (the tables' row pos);
 * q NULL: the keys alone (a row whose query is never used). */
static RB_ATTR void RB_FN(rope_qk)(const runc_batch *b, float *q, float *k, int pos)
{
    const int hs = b->hs;
    const float *cosv = b->rope_cos + (size_t)pos * (size_t)(hs / 2), *sinv = b->rope_sin + (size_t)pos * (size_t)(hs / 2);
    const float *cx = b->rope_cx + (size_t)pos * (size_t)hs, *sx = b->rope_sx + (size_t)pos * (size_t)hs;
    if (q) RB_FN(rope)(q, b->nh, hs, cosv, sinv, cx, sx);
    RB_FN(rope)(k, b->nkv, hs, cosv, sinv, cx, sx);
}

#if RB_KVEC
/* dst[c * ds + r] = src[r * ss + c] for an 8 x 8 block (r, c < 8): the
 * classic unpack / shuffle / lane-swap transpose. */
static RB_ATTR RB_ALWAYS_INLINE void RB_FN(transpose8)(float *restrict dst, size_t ds, const float *restrict src,
                                                       size_t ss)
{
    rb_v8 r0, r1, r2, r3, r4, r5, r6, r7, t0, t1, t2, t3, t4, t5, t6, t7, u0, u1, u2, u3, u4, u5, u6, u7;
    memcpy(&r0, src, sizeof r0);
    memcpy(&r1, src + ss, sizeof r1);
    memcpy(&r2, src + 2 * ss, sizeof r2);
    memcpy(&r3, src + 3 * ss, sizeof r3);
    memcpy(&r4, src + 4 * ss, sizeof r4);
    memcpy(&r5, src + 5 * ss, sizeof r5);
    memcpy(&r6, src + 6 * ss, sizeof r6);
    memcpy(&r7, src + 7 * ss, sizeof r7);
    t0 = RB_SHUF(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);
    t1 = RB_SHUF(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
    t2 = RB_SHUF(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);
    t3 = RB_SHUF(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
    t4 = RB_SHUF(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13);
    t5 = RB_SHUF(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);
    t6 = RB_SHUF(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13);
    t7 = RB_SHUF(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);
    u0 = RB_SHUF(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    u1 = RB_SHUF(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    u2 = RB_SHUF(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    u3 = RB_SHUF(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    u4 = RB_SHUF(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
    u5 = RB_SHUF(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    u6 = RB_SHUF(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
    u7 = RB_SHUF(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    r0 = RB_SHUF(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
    r1 = RB_SHUF(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
    r2 = RB_SHUF(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
    r3 = RB_SHUF(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
    r4 = RB_SHUF(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
    r5 = RB_SHUF(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
    r6 = RB_SHUF(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
    r7 = RB_SHUF(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
    memcpy(dst, &r0, sizeof r0);
    memcpy(dst + ds, &r1, sizeof r1);
    memcpy(dst + 2 * ds, &r2, sizeof r2);
    memcpy(dst + 3 * ds, &r3, sizeof r3);
    memcpy(dst + 4 * ds, &r4, sizeof r4);
    memcpy(dst + 5 * ds, &r5, sizeof r5);
    memcpy(dst + 6 * ds, &r6, sizeof r6);
    memcpy(dst + 7 * ds, &r7, sizeof r7);
}
#endif

/* dst[c * ds + r] = src[r * ss + c] for r < rows, c < cols: by 8 x 8 blocks where the vector types allow */
static RB_ATTR void RB_FN(transpose)(float *restrict dst, size_t ds, const float *restrict src, size_t ss, int rows,
                                     int cols)
{
    int r = 0, r1, c;
#if RB_KVEC
    for (; r + 8 <= rows; r += 8)
        for (c = 0; c + 8 <= cols; c += 8) RB_FN(transpose8)(dst + (size_t)c * ds + r, ds, src + (size_t)r * ss + c, ss);
    for (c = cols / 8 * 8; c < cols; c++) /* the last columns of the full row blocks */
        for (r1 = 0; r1 < r; r1++) dst[(size_t)c * ds + (size_t)r1] = src[(size_t)r1 * ss + (size_t)c];
#endif
    for (r1 = r; r1 < rows; r1++)
        for (c = 0; c < cols; c++) dst[(size_t)c * ds + (size_t)r1] = src[(size_t)r1 * ss + (size_t)c];
}

/* Row r of this step: rotate q and k, store k and v in its slot's cache at its
 * position, and attend over positions 0..pos; the heads' outputs go to xb[r].
 *
 * The kv heads are the vector lanes, padded to gp (a multiple of 8) lanes of
 * which the padding stays zero: keys and values are cached per position as
 * (head_size, gp), the queries transposed to (head_size, kv_mul, gp), scores
 * as (position, kv_mul, gp). Then every loop is over whole 8-lane vectors:
 * the scores of a position are head_size multiply-adds of vectors, each head's
 * softmax (max, exp, sum, division) runs down the positions lane-wise, and the
 * outputs are head_size vector accumulators over the positions -- each sum
 * still formed in runc.c's order (over channels, then over positions). */
static RB_ATTR void RB_FN(attend)(const runc_batch *b, rb_worker *w, int r, int l, int keys_only)
{
    const int D = b->D, KV = b->KV, hs = b->hs, nh = b->nh, nkv = b->nkv, kv_mul = nh / nkv, gp = b->gp;
    const int pos = w->row_pos[r], n = pos + 1, rowlen = kv_mul * gp; /* floats of one position's scores */
    float *q = w->qkv + (size_t)r * (size_t)b->sQKV, *k = q + D, *v = k + KV;
    float *kc = rb_slot_kv(b, w, w->row_slot[r], l), *vc = kc + (size_t)b->context * (size_t)hs * (size_t)gp;
    float *out = w->xb + (size_t)r * (size_t)b->sD;
    float *restrict att = w->att, *restrict qt = w->qt;
    const float scale = b->att_scale;
    int i, i0, t, j, c, kk;

    RB_FN(rope_qk)(b, keys_only ? NULL : q, k, pos);
    /* k and v (n_kv_heads x head_size) stored transposed at the position (head_size x gp) */
    RB_FN(transpose)(kc + (size_t)pos * (size_t)hs * (size_t)gp, (size_t)gp, k, (size_t)hs, nkv, hs);
    RB_FN(transpose)(vc + (size_t)pos * (size_t)hs * (size_t)gp, (size_t)gp, v, (size_t)hs, nkv, hs);
    if (keys_only) return;
    /* qt[(i * kv_mul + j) * gp + g] = channel i of query head g * kv_mul + j (padding lanes stay 0) */
    for (j = 0; j < kv_mul; j++)
        RB_FN(transpose)(qt + (size_t)j * (size_t)gp, (size_t)kv_mul * (size_t)gp, q + (size_t)j * (size_t)hs,
                         (size_t)kv_mul * (size_t)hs, nkv, hs);

#if RB_KVEC
    /* scores, two positions at a time (independent sums) */
    for (j = 0; j < kv_mul; j++)
        for (c = 0; c < gp; c += 8) {
            const float *qj = qt + (size_t)j * (size_t)gp + (size_t)c;
            for (t = 0; t + 2 <= n; t += 2) {
                const float *k0 = kc + (size_t)t * (size_t)hs * (size_t)gp + (size_t)c, *k1 = k0 + (size_t)hs * gp;
                rb_v8 a0 = {0}, a1 = {0};
                for (i = 0; i < hs; i++) {
                    const rb_v8 qv = *(const rb_v8 *)(qj + (size_t)i * (size_t)rowlen);
                    a0 += qv * *(const rb_v8 *)(k0 + (size_t)i * (size_t)gp);
                    a1 += qv * *(const rb_v8 *)(k1 + (size_t)i * (size_t)gp);
                }
                *(rb_v8 *)(att + (size_t)t * (size_t)rowlen + (size_t)j * gp + c) = a0 * scale;
                *(rb_v8 *)(att + (size_t)(t + 1) * (size_t)rowlen + (size_t)j * gp + c) = a1 * scale;
            }
            for (; t < n; t++) {
                const float *k0 = kc + (size_t)t * (size_t)hs * (size_t)gp + (size_t)c;
                rb_v8 a0 = {0};
                for (i = 0; i < hs; i++)
                    a0 += *(const rb_v8 *)(qj + (size_t)i * (size_t)rowlen) * *(const rb_v8 *)(k0 + (size_t)i * gp);
                *(rb_v8 *)(att + (size_t)t * (size_t)rowlen + (size_t)j * gp + c) = a0 * scale;
            }
        }
    /* softmax down the positions, lane-wise: runc.c's max (the first position,
     * then x > max), exp(x - max), the sum in order, the division */
    for (c = 0; c < rowlen; c += 8) {
        rb_v8 mx = *(const rb_v8 *)(att + c), sm = {0};
        for (t = 1; t < n; t++) {
            const rb_v8 a = *(const rb_v8 *)(att + (size_t)t * (size_t)rowlen + c);
            const rb_v8u m = (rb_v8u)(a > mx);
            mx = (rb_v8)(((rb_v8u)a & m) | ((rb_v8u)mx & ~m));
        }
        for (t = 0; t < n; t++) {
            rb_v8 *a = (rb_v8 *)(att + (size_t)t * (size_t)rowlen + c);
            *a = *a - mx;
        }
        for (t = 0; t < n; t++) { /* a loop of scalar exps over 8 floats: the compiler vectorises it */
            float *a = att + (size_t)t * (size_t)rowlen + c;
            for (kk = 0; kk < 8; kk++) a[kk] = runc_expf(a[kk]);
        }
        for (t = 0; t < n; t++) sm += *(const rb_v8 *)(att + (size_t)t * (size_t)rowlen + c);
        for (t = 0; t < n; t++) {
            rb_v8 *a = (rb_v8 *)(att + (size_t)t * (size_t)rowlen + c);
            *a = *a / sm;
        }
    }
    /* outputs: for each lane (kv head) and j, head_size accumulators over the positions */
    for (j = 0; j < kv_mul; j++)
        for (c = 0; c < gp; c += 8)
            for (i0 = 0; i0 < hs; i0 += 8) {
                const int in = hs - i0 < 8 ? hs - i0 : 8;
                rb_v8 acc[8];
                for (kk = 0; kk < 8; kk++) acc[kk] = (rb_v8){0};
                if (in == 8) { /* a constant count: the accumulators stay in registers */
                    for (t = 0; t < n; t++) {
                        const rb_v8 a = *(const rb_v8 *)(att + (size_t)t * (size_t)rowlen + (size_t)j * gp + c);
                        const float *vt = vc + ((size_t)t * (size_t)hs + (size_t)i0) * (size_t)gp + (size_t)c;
                        for (kk = 0; kk < 8; kk++) acc[kk] += a * *(const rb_v8 *)(vt + (size_t)kk * (size_t)gp);
                    }
                } else {
                    for (t = 0; t < n; t++) {
                        const rb_v8 a = *(const rb_v8 *)(att + (size_t)t * (size_t)rowlen + (size_t)j * gp + c);
                        const float *vt = vc + ((size_t)t * (size_t)hs + (size_t)i0) * (size_t)gp + (size_t)c;
                        for (kk = 0; kk < in; kk++) acc[kk] += a * *(const rb_v8 *)(vt + (size_t)kk * (size_t)gp);
                    }
                }
                if (in == 8 && c + 8 <= nkv) { /* 8 channels x 8 heads back to head-major */
                    RB_FN(transpose8)(out + ((size_t)c * (size_t)kv_mul + (size_t)j) * (size_t)hs + (size_t)i0,
                                      (size_t)kv_mul * (size_t)hs, (const float *)acc, 8);
                } else {
                    for (kk = 0; kk < in; kk++) {
                        int lane;
                        for (lane = 0; lane < 8 && c + lane < nkv; lane++)
                            out[((size_t)(c + lane) * (size_t)kv_mul + (size_t)j) * (size_t)hs + (size_t)(i0 + kk)] =
                                acc[kk][lane];
                    }
                }
            }
#else
    {
        float acc[8];
        /* scores */
        for (t = 0; t < n; t++)
            for (j = 0; j < kv_mul; j++)
                for (c = 0; c < gp; c += 8) {
                    const float *k0 = kc + (size_t)t * (size_t)hs * (size_t)gp + (size_t)c;
                    for (kk = 0; kk < 8; kk++) acc[kk] = 0.0f;
                    for (i = 0; i < hs; i++) {
                        const float *qi = qt + ((size_t)i * (size_t)kv_mul + (size_t)j) * (size_t)gp + (size_t)c;
                        const float *ki = k0 + (size_t)i * (size_t)gp;
                        for (kk = 0; kk < 8; kk++) acc[kk] += qi[kk] * ki[kk];
                    }
                    for (kk = 0; kk < 8; kk++)
                        att[(size_t)t * (size_t)rowlen + (size_t)j * gp + c + kk] = acc[kk] * scale;
                }
        /* softmax down the positions, lane-wise */
        for (c = 0; c < rowlen; c += 8) {
            float mx[8], sm[8];
            for (kk = 0; kk < 8; kk++) {
                mx[kk] = att[c + kk];
                sm[kk] = 0.0f;
            }
            for (t = 1; t < n; t++) {
                const float *a = att + (size_t)t * (size_t)rowlen + c;
                for (kk = 0; kk < 8; kk++) mx[kk] = a[kk] > mx[kk] ? a[kk] : mx[kk];
            }
            for (t = 0; t < n; t++) {
                float *a = att + (size_t)t * (size_t)rowlen + c;
                for (kk = 0; kk < 8; kk++) a[kk] = runc_expf(a[kk] - mx[kk]);
            }
            for (t = 0; t < n; t++) {
                const float *a = att + (size_t)t * (size_t)rowlen + c;
                for (kk = 0; kk < 8; kk++) sm[kk] += a[kk];
            }
            for (t = 0; t < n; t++) {
                float *a = att + (size_t)t * (size_t)rowlen + c;
                for (kk = 0; kk < 8; kk++) a[kk] /= sm[kk];
            }
        }
        /* outputs */
        int g;
        for (g = 0; g < nkv; g++)
            for (j = 0; j < kv_mul; j++)
                for (i = 0; i < hs; i++) {
                    float o = 0.0f;
                    for (t = 0; t < n; t++)
                        o += att[(size_t)t * (size_t)rowlen + (size_t)j * gp + (size_t)g] *
                             vc[((size_t)t * (size_t)hs + (size_t)i) * (size_t)gp + (size_t)g];
                    out[((size_t)g * (size_t)kv_mul + (size_t)j) * (size_t)hs + (size_t)i] = o;
                }
        (void)i0;
    }
#endif
}

#if RB_KVEC
/* Attention with the slots as the vector lanes, for models whose kv heads
 * are not a multiple of 8 (as lanes, they would leave lanes idle).
 * Slots 8o..8o+7 form octet o; its cache holds, per layer, keys then values
 * as (context, kv_dim, 8 slots). Rows come in slot order, so the rows of an
 * octet are consecutive. Each lane forms runc.c's sums for its own row at its
 * own position, in runc.c's order; positions past a lane's own are masked:
 * their scores are -inf (never the max), their weights 0, and their values
 * are never added (a slot's old problem may have left anything there).
 * In the last layer (last_layer), an octet none of whose rows wants logits stores
 * its keys and values and stops there (see step). */
static RB_ATTR void RB_FN(attend_lanes)(const runc_batch *b, rb_worker *w, int B, int l, int last_layer)
{
    const int D = b->D, KV = b->KV, hs = b->hs, nh = b->nh, kv_mul = nh / b->nkv, C = b->context;
    const size_t KV8 = (size_t)KV * 8;
    float *restrict att = w->att, *restrict qt = w->qt;
    const rb_v8 ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int r0 = 0;
    while (r0 < B) {
        const int o = w->row_slot[r0] / 8;
        int r1 = r0, lane, rows[8], nmin = C, nmax = 0, h, i, i0, t, c, kk, any_out = 0;
        rb_v8i last = {-1, -1, -1, -1, -1, -1, -1, -1}; /* each lane's position (-1: no row) */
        float *kc = w->kv + ((size_t)o * (size_t)b->L + (size_t)l) * 2 * (size_t)C * KV8, *vc = kc + (size_t)C * KV8;
        for (lane = 0; lane < 8; lane++) rows[lane] = -1;
        for (; r1 < B && w->row_slot[r1] / 8 == o; r1++) rows[w->row_slot[r1] % 8] = r1;
        for (lane = 0; lane < 8; lane++) {
            const int r = rows[lane];
            int p;
            float *q, *k, *v;
            if (r < 0) {
                for (c = 0; c < D; c++) qt[(size_t)c * 8 + (size_t)lane] = 0.0f;
                continue;
            }
            p = w->row_pos[r];
            q = w->qkv + (size_t)r * (size_t)b->sQKV;
            k = q + D;
            v = k + KV;
            any_out |= !last_layer || w->row_out[r];
            RB_FN(rope_qk)(b, last_layer && !w->row_out[r] ? NULL : q, k, p);
            for (c = 0; c < KV; c++) {
                kc[(size_t)p * KV8 + (size_t)c * 8 + (size_t)lane] = k[c];
                vc[(size_t)p * KV8 + (size_t)c * 8 + (size_t)lane] = v[c];
            }
            for (c = 0; c < D; c++) qt[(size_t)c * 8 + (size_t)lane] = q[c];
            last[lane] = p;
            nmin = p + 1 < nmin ? p + 1 : nmin;
            nmax = p + 1 > nmax ? p + 1 : nmax;
        }
        for (h = 0; h < nh && any_out; h++) {
            const size_t koff = (size_t)(h / kv_mul) * (size_t)hs * 8;
            const float *qh = qt + (size_t)h * (size_t)hs * 8;
            rb_v8 mx, sm = {0};
            /* scores: runc.c's sum over the channels, then the scale */
            for (t = 0; t < nmax; t++) {
                const float *kt = kc + (size_t)t * KV8 + koff;
                rb_v8 a = {0};
                for (i = 0; i < hs; i++) a += *(const rb_v8 *)(qh + (size_t)i * 8) * *(const rb_v8 *)(kt + (size_t)i * 8);
                a = a * b->att_scale;
                if (t >= nmin) {
                    const rb_v8i tv = {t, t, t, t, t, t, t, t};
                    const rb_v8u live = (rb_v8u)(tv <= last);
                    a = (rb_v8)(((rb_v8u)a & live) | ((rb_v8u)ninf & ~live));
                }
                *(rb_v8 *)(att + (size_t)t * 8) = a;
            }
            /* softmax down the positions, lane-wise (runc.c's max, exp, sum, division) */
            mx = *(const rb_v8 *)att;
            for (t = 1; t < nmax; t++) {
                const rb_v8 a = *(const rb_v8 *)(att + (size_t)t * 8);
                const rb_v8u m = (rb_v8u)(a > mx);
                mx = (rb_v8)(((rb_v8u)a & m) | ((rb_v8u)mx & ~m));
            }
            for (t = 0; t < nmax; t++) {
                float *a = att + (size_t)t * 8;
                *(rb_v8 *)a = *(const rb_v8 *)a - mx;
                for (kk = 0; kk < 8; kk++) a[kk] = runc_expf(a[kk]);
                if (t >= nmin) { /* masked weights are exactly 0 */
                    const rb_v8i tv = {t, t, t, t, t, t, t, t};
                    const rb_v8u e = (rb_v8u)(*(const rb_v8 *)a);
                    *(rb_v8 *)a = (rb_v8)(e & (rb_v8u)(tv <= last));
                }
            }
            for (t = 0; t < nmax; t++) sm += *(const rb_v8 *)(att + (size_t)t * 8);
            for (t = 0; t < nmax; t++) *(rb_v8 *)(att + (size_t)t * 8) = *(const rb_v8 *)(att + (size_t)t * 8) / sm;
            /* outputs: per channel, the weighted values summed over the positions in order */
            for (i0 = 0; i0 < hs; i0 += 8) {
                const int in = hs - i0 < 8 ? hs - i0 : 8;
                rb_v8 acc[8];
                for (kk = 0; kk < 8; kk++) acc[kk] = (rb_v8){0};
                for (t = 0; t < nmax; t++) {
                    const rb_v8 a = *(const rb_v8 *)(att + (size_t)t * 8);
                    const float *vt = vc + (size_t)t * KV8 + koff + (size_t)i0 * 8;
                    if (t < nmin) {
                        for (kk = 0; kk < in; kk++) acc[kk] += a * *(const rb_v8 *)(vt + (size_t)kk * 8);
                    } else {
                        const rb_v8i tv = {t, t, t, t, t, t, t, t};
                        const rb_v8u live = (rb_v8u)(tv <= last);
                        for (kk = 0; kk < in; kk++) {
                            const rb_v8 s = acc[kk] + a * *(const rb_v8 *)(vt + (size_t)kk * 8);
                            acc[kk] = (rb_v8)(((rb_v8u)s & live) | ((rb_v8u)acc[kk] & ~live));
                        }
                    }
                }
                for (lane = 0; lane < 8; lane++) {
                    float *out;
                    if (rows[lane] < 0) continue;
                    out = w->xb + (size_t)rows[lane] * (size_t)b->sD + (size_t)h * (size_t)hs + (size_t)i0;
                    for (kk = 0; kk < in; kk++) out[kk] = acc[kk][lane];
                }
            }
        }
        r0 = r1;
    }
}
#endif

/* ---- one step ------------------------------------------------------------------- */

/* Advance rows 0..B-1 of worker w by one token each (w->row_tok at
 * w->row_pos, in slot w->row_slot), and compute logits for rows w->lrow[0..BL)
 * into w->logits (row j for lrow[j]); with w->want_lp, also w->lp[j], the
 * log-probability of each row's argmax token (log-softmax at temperature 1).
 *
 * A row inside its prompt (not in lrow) needs from the last layer only its
 * keys and values, for the positions after it: what the layer computes past
 * them feeds nothing but the logits. So the last layer stores every row's
 * keys and values, then moves the lrow rows to the front (x and the attention
 * output, in order: lrow is increasing) and runs the rest for those BL rows
 * alone. In a classic problem (11 prompt tokens, up to 8 answer tokens) more
 * than half of all rows are prompt rows. Each row's arithmetic is its own, so
 * the logits are unchanged, bit for bit. */
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
        const int last = l == b->L - 1;
        RB_FN(rmsnorm_rows)(w->xb, sD, w->x, sD, m->rms_att + (size_t)l * (size_t)D, B, D, eps);
        RB_FN(matmul)(b, w, w->qkv, b->sQKV, w->xb, sD, &ly->qkv, B);
#if RB_KVEC
        if (b->lanes)
            RB_FN(attend_lanes)(b, w, B, l, last);
        else
#endif
            for (r = 0; r < B; r++) RB_FN(attend)(b, w, r, l, last && !w->row_out[r]);
        if (last && BL < B) {
            for (r = 0; r < BL; r++) {
                const int src = w->lrow[r];
                if (src == r) continue;
                memcpy(w->x + (size_t)r * (size_t)sD, w->x + (size_t)src * (size_t)sD, (size_t)D * sizeof(float));
                memcpy(w->xb + (size_t)r * (size_t)sD, w->xb + (size_t)src * (size_t)sD, (size_t)D * sizeof(float));
            }
            B = BL;
            if (B == 0) return;
        }
        RB_FN(matmul)(b, w, w->xb2, sD, w->xb, sD, &ly->wo, B);
        for (r = 0; r < B; r++) {
            float *restrict x = w->x + (size_t)r * (size_t)sD;
            const float *restrict y = w->xb2 + (size_t)r * (size_t)sD;
            for (i = 0; i < D; i++) x[i] += y[i];
        }
        RB_FN(rmsnorm_rows)(w->xb, sD, w->x, sD, m->rms_ffn + (size_t)l * (size_t)D, B, D, eps);
        RB_FN(matmul)(b, w, w->h13, b->s13, w->xb, sD, &ly->w13, B);
        for (r = 0; r < B; r++) {
            const float *restrict h1 = w->h13 + (size_t)r * (size_t)b->s13, *restrict h3 = h1 + H;
            float *restrict hb = w->hb + (size_t)r * (size_t)b->sH;
            /* all sH values, not H: whole vectors, no scalar tail (the values
             * past H come from the row's padding and are never read) */
            for (i = 0; i < b->sH; i++) {
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
        RB_FN(rmsnorm_rows)(w->xb, sD, w->x, sD, m->rms_final, BL, D, eps);
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
