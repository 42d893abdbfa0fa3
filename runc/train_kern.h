/*
 * train_kern.h - train.c's inner loops: the two matrix products of a
 * training step, SwiGLU, AdamW. Part of train.c (included once, sees its
 * includes); kept apart so the arithmetic of a step reads in one place.
 *
 * Products sum over their inner dimension in index order, whatever the tile,
 * so a result does not depend on where it falls in a tile. Tiles of TR rows x
 * TC columns of accumulators are plain C arrays the compiler keeps in vector
 * registers.
 */

#define TR 4
#define TC 16

/* out[n][m] = (acc ? out[n][m] : 0) + sum_k a[n][k] b[k][m]; a: N x K, b: K x M, out: N x M. */
static void mm_nn_kernel(float *restrict out, const float *restrict a, const float *restrict b, int acc, int N, int K,
                         int M)
{
    int n0, m0, r, j, k;
    for (n0 = 0; n0 < N; n0 += TR) {
        const int nr = N - n0 < TR ? N - n0 : TR;
        for (m0 = 0; m0 < M; m0 += TC) {
            const int mc = M - m0 < TC ? M - m0 : TC;
            float c[TR][TC];
            if (nr == TR && mc == TC) {
                for (r = 0; r < TR; r++)
                    for (j = 0; j < TC; j++) c[r][j] = acc ? out[(size_t)(n0 + r) * (size_t)M + (size_t)(m0 + j)] : 0.0f;
                for (k = 0; k < K; k++) {
                    const float *restrict bk = b + (size_t)k * (size_t)M + (size_t)m0;
                    for (r = 0; r < TR; r++) {
                        const float av = a[(size_t)(n0 + r) * (size_t)K + (size_t)k];
                        for (j = 0; j < TC; j++) c[r][j] += av * bk[j];
                    }
                }
                for (r = 0; r < TR; r++)
                    for (j = 0; j < TC; j++) out[(size_t)(n0 + r) * (size_t)M + (size_t)(m0 + j)] = c[r][j];
            } else {
                for (r = 0; r < nr; r++)
                    for (j = 0; j < mc; j++) c[r][j] = acc ? out[(size_t)(n0 + r) * (size_t)M + (size_t)(m0 + j)] : 0.0f;
                for (k = 0; k < K; k++) {
                    const float *restrict bk = b + (size_t)k * (size_t)M + (size_t)m0;
                    for (r = 0; r < nr; r++) {
                        const float av = a[(size_t)(n0 + r) * (size_t)K + (size_t)k];
                        for (j = 0; j < mc; j++) c[r][j] += av * bk[j];
                    }
                }
                for (r = 0; r < nr; r++)
                    for (j = 0; j < mc; j++) out[(size_t)(n0 + r) * (size_t)M + (size_t)(m0 + j)] = c[r][j];
            }
        }
    }
}

/* out = init + a b (init NULL: 0; init may be out itself) */
static void mm_nn(float *out, const float *a, const float *b, const float *init, int N, int K, int M)
{
    if (init && init != out) memcpy(out, init, (size_t)N * (size_t)M * sizeof(float));
    mm_nn_kernel(out, a, b, init != NULL, N, K, M);
}

/* g[k][m] += sum_n a[n][k] b[n][m]; a: N x K, b: N x M, g: K x M (a weight's gradient). */
static void mm_tn(float *restrict g, const float *restrict a, const float *restrict b, int N, int K, int M)
{
    int k0, m0, r, j, n;
    for (k0 = 0; k0 < K; k0 += TR) {
        const int kr = K - k0 < TR ? K - k0 : TR;
        for (m0 = 0; m0 < M; m0 += TC) {
            const int mc = M - m0 < TC ? M - m0 : TC;
            float c[TR][TC];
            if (kr == TR && mc == TC) {
                for (r = 0; r < TR; r++)
                    for (j = 0; j < TC; j++) c[r][j] = g[(size_t)(k0 + r) * (size_t)M + (size_t)(m0 + j)];
                for (n = 0; n < N; n++) {
                    const float *restrict bn = b + (size_t)n * (size_t)M + (size_t)m0;
                    const float *restrict an = a + (size_t)n * (size_t)K + (size_t)k0;
                    for (r = 0; r < TR; r++) {
                        const float av = an[r];
                        for (j = 0; j < TC; j++) c[r][j] += av * bn[j];
                    }
                }
                for (r = 0; r < TR; r++)
                    for (j = 0; j < TC; j++) g[(size_t)(k0 + r) * (size_t)M + (size_t)(m0 + j)] = c[r][j];
            } else {
                for (r = 0; r < kr; r++)
                    for (j = 0; j < mc; j++) c[r][j] = g[(size_t)(k0 + r) * (size_t)M + (size_t)(m0 + j)];
                for (n = 0; n < N; n++) {
                    const float *restrict bn = b + (size_t)n * (size_t)M + (size_t)m0;
                    const float *restrict an = a + (size_t)n * (size_t)K + (size_t)k0;
                    for (r = 0; r < kr; r++) {
                        const float av = an[r];
                        for (j = 0; j < mc; j++) c[r][j] += av * bn[j];
                    }
                }
                for (r = 0; r < kr; r++)
                    for (j = 0; j < mc; j++) g[(size_t)(k0 + r) * (size_t)M + (size_t)(m0 + j)] = c[r][j];
            }
        }
    }
}

/* dst (cols x rows) = src (rows x cols)^T */
static void transpose(float *restrict dst, const float *restrict src, int rows, int cols)
{
    int r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) dst[(size_t)c * (size_t)rows + (size_t)r] = src[(size_t)r * (size_t)cols + (size_t)c];
}

/* g = silu(a) * b, silu(a) = a * sigmoid(a) */
static void swiglu_fwd(float *restrict g, const float *restrict a, const float *restrict b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-a[i]));
        g[i] = (a[i] * s) * b[i];
    }
}

static void swiglu_bwd(float *restrict da, float *restrict db, const float *restrict dg, const float *restrict a,
                       const float *restrict b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-a[i]));
        db[i] = dg[i] * (a[i] * s);
        da[i] = dg[i] * b[i] * (s * (1.0f + a[i] * (1.0f - s)));
    }
}

/* AdamW without its weight decay (applied before), in train/optim.py's order:
 * m.lerp_(g, 1 - b1); v = v * b2 + (1 - b2) * g * g;
 * p += step * m / (sqrt(v) / sqrt(bc2) + eps), step = -lr / bc1. */
static void adamw_update(float *restrict p, float *restrict m, float *restrict v, const float *restrict g, size_t n,
                         float b1w, float b2, float b2w, float bc2s, float eps, float step)
{
    size_t j;
    for (j = 0; j < n; j++) {
        const float gj = g[j];
        float mj = m[j], vj = v[j], denom;
        mj = b1w < 0.5f ? mj + b1w * (gj - mj) : gj - (gj - mj) * (1.0f - b1w);
        vj = vj * b2;
        vj = vj + b2w * gj * gj;
        denom = sqrtf(vj) / bc2s + eps;
        p[j] = p[j] + step * mj / denom;
        m[j] = mj;
        v[j] = vj;
    }
}
