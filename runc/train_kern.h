/*
 * train_kern.h - train.c's compute: the matrix products, the layers' forward
 * and backward pass, and run_rows (a worker's whole share of a step). Part of
 * train.c, not a header of its own: included once per instruction set, with
 * TK_SUFFIX naming the variant and TK_ATTR its function attribute (empty for
 * the portable build, target("avx2,fma") for the x86 variant picked at run
 * time), the way batch.c builds batch_kern.h.
 *
 * Activations are rows of padded width (dim, kv_dim, hidden_dim and vocab_size
 * rounded up to 8 floats; the padding columns stay zero), so the products
 * load and store whole 8-float vectors. Products sum over their inner
 * dimension in index order, in tiles of 4 rows x 16 columns of accumulators.
 */

#define TK_FN(name) TK_CAT(name, TK_SUFFIX)

#if TK_VEC
#if TK_USE_FMA
#define TK_MADD(c, x, y) ((c) = _mm256_fmadd_ps((x), (y), (c)))
#else
#define TK_MADD(c, x, y) ((c) += (x) * (y))
#endif
#define TK_LD(v, p) memcpy(&(v), (p), sizeof(tk_v8))
#define TK_ST(p, v) memcpy((p), &(v), sizeof(tk_v8))

/* out[n][m] = (acc ? out[n][m] : 0) + sum_k a[n][k] b[k][m], for n < N, m < M rounded up to 8
 * (out and b have room for that: padded rows). */
static TK_ATTR void TK_FN(mm_nn)(float *restrict out, int ldo, const float *restrict a, int lda,
                                 const float *restrict b, int ldb, int acc, int N, int K, int M)
{
    const int Mv = (M + 7) & ~7;
    const tk_v8 z = {0, 0, 0, 0, 0, 0, 0, 0};
    int n = 0, m, k;
    for (; n + 4 <= N; n += 4) {
        const float *restrict a0 = a + (size_t)n * (size_t)lda, *restrict a1 = a0 + lda;
        const float *restrict a2 = a1 + lda, *restrict a3 = a2 + lda;
        float *o0 = out + (size_t)n * (size_t)ldo, *o1 = o0 + ldo, *o2 = o1 + ldo, *o3 = o2 + ldo;
        for (m = 0; m + 16 <= Mv; m += 16) {
            tk_v8 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
            if (acc) {
                TK_LD(c00, o0 + m); TK_LD(c01, o0 + m + 8); TK_LD(c10, o1 + m); TK_LD(c11, o1 + m + 8);
                TK_LD(c20, o2 + m); TK_LD(c21, o2 + m + 8); TK_LD(c30, o3 + m); TK_LD(c31, o3 + m + 8);
            }
            for (k = 0; k < K; k++) {
                const float *bk = b + (size_t)k * (size_t)ldb + m;
                tk_v8 b0, b1, x;
                TK_LD(b0, bk);
                TK_LD(b1, bk + 8);
                x = z + a0[k]; TK_MADD(c00, x, b0); TK_MADD(c01, x, b1);
                x = z + a1[k]; TK_MADD(c10, x, b0); TK_MADD(c11, x, b1);
                x = z + a2[k]; TK_MADD(c20, x, b0); TK_MADD(c21, x, b1);
                x = z + a3[k]; TK_MADD(c30, x, b0); TK_MADD(c31, x, b1);
            }
            TK_ST(o0 + m, c00); TK_ST(o0 + m + 8, c01); TK_ST(o1 + m, c10); TK_ST(o1 + m + 8, c11);
            TK_ST(o2 + m, c20); TK_ST(o2 + m + 8, c21); TK_ST(o3 + m, c30); TK_ST(o3 + m + 8, c31);
        }
        for (; m < Mv; m += 8) {
            tk_v8 c0 = z, c1 = z, c2 = z, c3 = z;
            if (acc) {
                TK_LD(c0, o0 + m); TK_LD(c1, o1 + m); TK_LD(c2, o2 + m); TK_LD(c3, o3 + m);
            }
            for (k = 0; k < K; k++) {
                tk_v8 b0, x;
                TK_LD(b0, b + (size_t)k * (size_t)ldb + m);
                x = z + a0[k]; TK_MADD(c0, x, b0);
                x = z + a1[k]; TK_MADD(c1, x, b0);
                x = z + a2[k]; TK_MADD(c2, x, b0);
                x = z + a3[k]; TK_MADD(c3, x, b0);
            }
            TK_ST(o0 + m, c0); TK_ST(o1 + m, c1); TK_ST(o2 + m, c2); TK_ST(o3 + m, c3);
        }
    }
    for (; n < N; n++) {
        const float *restrict a0 = a + (size_t)n * (size_t)lda;
        float *o0 = out + (size_t)n * (size_t)ldo;
        for (m = 0; m < Mv; m += 8) {
            tk_v8 c0 = z;
            if (acc) TK_LD(c0, o0 + m);
            for (k = 0; k < K; k++) {
                tk_v8 b0, x;
                TK_LD(b0, b + (size_t)k * (size_t)ldb + m);
                x = z + a0[k];
                TK_MADD(c0, x, b0);
            }
            TK_ST(o0 + m, c0);
        }
    }
}

/* g[k][m] += sum_n a[n][k] b[n][m]: a weight's gradient (g dense, K x M); b has padded rows.
 * Positions go in chunks that stay in the L2 cache; every sum still adds its terms in position
 * order (each chunk continues from the stored partial sum). */
static TK_ATTR void TK_FN(mm_tn)(float *restrict g, const float *restrict a, int lda, const float *restrict b,
                                 int ldb, int N, int K, int M)
{
    const tk_v8 z = {0, 0, 0, 0, 0, 0, 0, 0};
    const int chunk = 128;
    int n0, k, m, n, r;
    for (n0 = 0; n0 < N; n0 += chunk) {
        const int n1 = N - n0 < chunk ? N : n0 + chunk;
        for (k = 0; k < K; k += 4) {
            const int kr = K - k < 4 ? K - k : 4;
            for (m = 0; m < M; m += 16) {
                const int mc = M - m < 16 ? M - m : 16;
                float tmp[4][16];
                tk_v8 c00, c01, c10, c11, c20, c21, c30, c31;
                memset(tmp, 0, sizeof tmp);
                for (r = 0; r < kr; r++)
                    memcpy(tmp[r], g + (size_t)(k + r) * (size_t)M + m, (size_t)mc * sizeof(float));
                TK_LD(c00, tmp[0]); TK_LD(c01, tmp[0] + 8); TK_LD(c10, tmp[1]); TK_LD(c11, tmp[1] + 8);
                TK_LD(c20, tmp[2]); TK_LD(c21, tmp[2] + 8); TK_LD(c30, tmp[3]); TK_LD(c31, tmp[3] + 8);
                if (kr == 4 && mc > 8) {
                    for (n = n0; n < n1; n++) {
                        const float *an = a + (size_t)n * (size_t)lda + k;
                        const float *bn = b + (size_t)n * (size_t)ldb + m;
                        tk_v8 b0, b1, x;
                        TK_LD(b0, bn);
                        TK_LD(b1, bn + 8);
                        x = z + an[0]; TK_MADD(c00, x, b0); TK_MADD(c01, x, b1);
                        x = z + an[1]; TK_MADD(c10, x, b0); TK_MADD(c11, x, b1);
                        x = z + an[2]; TK_MADD(c20, x, b0); TK_MADD(c21, x, b1);
                        x = z + an[3]; TK_MADD(c30, x, b0); TK_MADD(c31, x, b1);
                    }
                } else if (kr == 4) {
                    for (n = n0; n < n1; n++) {
                        const float *an = a + (size_t)n * (size_t)lda + k;
                        tk_v8 b0, x;
                        TK_LD(b0, b + (size_t)n * (size_t)ldb + m);
                        x = z + an[0]; TK_MADD(c00, x, b0);
                        x = z + an[1]; TK_MADD(c10, x, b0);
                        x = z + an[2]; TK_MADD(c20, x, b0);
                        x = z + an[3]; TK_MADD(c30, x, b0);
                    }
                } else {
                    for (n = n0; n < n1; n++) {
                        const float *an = a + (size_t)n * (size_t)lda + k;
                        const float *bn = b + (size_t)n * (size_t)ldb + m;
                        tk_v8 b0, b1 = z, x;
                        TK_LD(b0, bn);
                        if (mc > 8) TK_LD(b1, bn + 8);
                        x = z + an[0]; TK_MADD(c00, x, b0); TK_MADD(c01, x, b1);
                        if (kr > 1) { x = z + an[1]; TK_MADD(c10, x, b0); TK_MADD(c11, x, b1); }
                        if (kr > 2) { x = z + an[2]; TK_MADD(c20, x, b0); TK_MADD(c21, x, b1); }
                    }
                }
                TK_ST(tmp[0], c00); TK_ST(tmp[0] + 8, c01); TK_ST(tmp[1], c10); TK_ST(tmp[1] + 8, c11);
                TK_ST(tmp[2], c20); TK_ST(tmp[2] + 8, c21); TK_ST(tmp[3], c30); TK_ST(tmp[3] + 8, c31);
                for (r = 0; r < kr; r++)
                    memcpy(g + (size_t)(k + r) * (size_t)M + m, tmp[r], (size_t)mc * sizeof(float));
            }
        }
    }
}
#else /* no vector types: the same sums, plain loops */
static void TK_FN(mm_nn)(float *restrict out, int ldo, const float *restrict a, int lda, const float *restrict b,
                         int ldb, int acc, int N, int K, int M)
{
    int n, m, k;
    for (n = 0; n < N; n++) {
        float *o = out + (size_t)n * (size_t)ldo;
        const float *an = a + (size_t)n * (size_t)lda;
        if (!acc)
            for (m = 0; m < M; m++) o[m] = 0.0f;
        for (k = 0; k < K; k++) {
            const float *bk = b + (size_t)k * (size_t)ldb;
            for (m = 0; m < M; m++) o[m] += an[k] * bk[m];
        }
    }
}

static void TK_FN(mm_tn)(float *restrict g, const float *restrict a, int lda, const float *restrict b, int ldb,
                         int N, int K, int M)
{
    int n, m, k;
    for (n = 0; n < N; n++)
        for (k = 0; k < K; k++) {
            const float av = a[(size_t)n * (size_t)lda + (size_t)k];
            const float *bn = b + (size_t)n * (size_t)ldb;
            float *gk = g + (size_t)k * (size_t)M;
            for (m = 0; m < M; m++) gk[m] += av * bn[m];
        }
}
#endif

/* ---- rows ------------------------------------------------------------------------ */

static TK_ATTR void TK_FN(rmsnorm_fwd)(float *restrict out, float *restrict rstd, const float *restrict x, int ld,
                                       const float *restrict w, int n, int d, float eps)
{
    int r, i;
    for (r = 0; r < n; r++) {
        const float *restrict xr = x + (size_t)r * (size_t)ld;
        float *restrict o = out + (size_t)r * (size_t)ld;
        float ss = 0.0f, s;
        for (i = 0; i < d; i++) ss += xr[i] * xr[i];
        s = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[r] = s;
        for (i = 0; i < d; i++) o[i] = (xr[i] * s) * w[i];
    }
}

/* dx += d/dx of out = (x * rstd) * w given dout; gw += dout * x * rstd */
static TK_ATTR void TK_FN(rmsnorm_bwd)(float *restrict dx, float *restrict gw, const float *restrict dout,
                                       const float *restrict x, const float *restrict rstd, int ld,
                                       const float *restrict w, int n, int d)
{
    int r, i;
    for (r = 0; r < n; r++) {
        const float *restrict xr = x + (size_t)r * (size_t)ld;
        const float *restrict dr = dout + (size_t)r * (size_t)ld;
        float *restrict o = dx + (size_t)r * (size_t)ld;
        const float s = rstd[r];
        float dot = 0.0f;
        for (i = 0; i < d; i++) {
            const float xh = xr[i] * s;
            gw[i] += dr[i] * xh;
            dot += dr[i] * w[i] * xh;
        }
        dot /= (float)d;
        for (i = 0; i < d; i++) o[i] += s * (dr[i] * w[i] - xr[i] * s * dot);
    }
}

/* rotate channel pairs of each head by position: forward (dir 1) or back (dir -1) */
static TK_ATTR void TK_FN(rope)(const runc_trainer *t, float *restrict x, int width, int ld, int n0, int n1, float dir)
{
    const int half = t->hd / 2;
    int n, i, j;
    for (n = n0; n < n1; n++) {
        const float *restrict cs = t->rope_cos + (size_t)t->pos[n] * (size_t)half;
        const float *restrict sn = t->rope_sin + (size_t)t->pos[n] * (size_t)half;
        float *restrict xr = x + (size_t)n * (size_t)ld;
        for (i = 0; i < width; i += t->hd)
            for (j = 0; j < half; j++) {
                const float re = xr[i + 2 * j], im = xr[i + 2 * j + 1], c = cs[j], s = dir * sn[j];
                xr[i + 2 * j] = re * c - im * s;
                xr[i + 2 * j + 1] = re * s + im * c;
            }
    }
}

static TK_ATTR void TK_FN(attention_fwd)(const runc_trainer *t, int l, int r0, int r1)
{
    const int Dp = t->Dp, KVp = t->KVp, hd = t->hd, nh = t->c.n_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = t->q + (size_t)l * t->max_tok * (size_t)Dp;
    const float *k = t->k + (size_t)l * t->max_tok * (size_t)KVp;
    const float *v = t->v_ + (size_t)l * t->max_tok * (size_t)KVp;
    float *y = t->y + (size_t)l * t->max_tok * (size_t)Dp;
    float *prob = t->prob + (size_t)l * t->max_prob;
    int r, h, p, u, i;
    for (r = r0; r < r1; r++) {
        const int base = t->row_tok[r], n = t->row_tok[r + 1] - base;
        for (p = 0; p < n; p++) {
            const int tk = base + p;
            for (h = 0; h < nh; h++) {
                const int kh = h / t->rep;
                const float *restrict qv = q + (size_t)tk * (size_t)Dp + (size_t)(h * hd);
                float *restrict pr = prob + t->prob_off[tk] + (size_t)h * (size_t)(p + 1);
                float *restrict yo = y + (size_t)tk * (size_t)Dp + (size_t)(h * hd);
                float mx = -INFINITY, sum = 0.0f;
                for (u = 0; u <= p; u++) {
                    const float *restrict kv = k + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    float s = 0.0f;
                    for (i = 0; i < hd; i++) s += qv[i] * kv[i];
                    s *= scale;
                    pr[u] = s;
                    if (s > mx) mx = s;
                }
                for (u = 0; u <= p; u++) {
                    pr[u] = runc_expf(pr[u] - mx);
                    sum += pr[u];
                }
                for (u = 0; u <= p; u++) pr[u] /= sum;
                for (i = 0; i < hd; i++) yo[i] = 0.0f;
                for (u = 0; u <= p; u++) {
                    const float *restrict vv = v + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    const float w = pr[u];
                    for (i = 0; i < hd; i++) yo[i] += w * vv[i];
                }
            }
        }
    }
}

static TK_ATTR void TK_FN(attention_bwd)(const runc_trainer *t, int l, int r0, int r1, float *restrict dp)
{
    const int Dp = t->Dp, KVp = t->KVp, hd = t->hd, nh = t->c.n_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = t->q + (size_t)l * t->max_tok * (size_t)Dp;
    const float *k = t->k + (size_t)l * t->max_tok * (size_t)KVp;
    const float *v = t->v_ + (size_t)l * t->max_tok * (size_t)KVp;
    const float *prob = t->prob + (size_t)l * t->max_prob;
    int r, h, p, u, i;
    for (r = r0; r < r1; r++) {
        const int base = t->row_tok[r], n = t->row_tok[r + 1] - base;
        memset(t->dk + (size_t)base * (size_t)KVp, 0, (size_t)n * (size_t)KVp * sizeof(float));
        memset(t->dv + (size_t)base * (size_t)KVp, 0, (size_t)n * (size_t)KVp * sizeof(float));
        for (p = 0; p < n; p++) {
            const int tk = base + p;
            for (h = 0; h < nh; h++) {
                const int kh = h / t->rep;
                const float *restrict qv = q + (size_t)tk * (size_t)Dp + (size_t)(h * hd);
                const float *restrict pr = prob + t->prob_off[tk] + (size_t)h * (size_t)(p + 1);
                const float *restrict dyv = t->dy + (size_t)tk * (size_t)Dp + (size_t)(h * hd);
                float *restrict dqv = t->dq + (size_t)tk * (size_t)Dp + (size_t)(h * hd);
                float dot = 0.0f;
                for (u = 0; u <= p; u++) {
                    const float *restrict vv = v + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    float *restrict dvv = t->dv + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    float s = 0.0f;
                    const float w = pr[u];
                    for (i = 0; i < hd; i++) {
                        s += dyv[i] * vv[i];
                        dvv[i] += w * dyv[i];
                    }
                    dp[u] = s;
                    dot += w * s;
                }
                for (i = 0; i < hd; i++) dqv[i] = 0.0f;
                for (u = 0; u <= p; u++) {
                    const float *restrict kv = k + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    float *restrict dkv = t->dk + (size_t)(base + u) * (size_t)KVp + (size_t)(kh * hd);
                    const float ds = pr[u] * (dp[u] - dot) * scale;
                    for (i = 0; i < hd; i++) {
                        dqv[i] += ds * kv[i];
                        dkv[i] += ds * qv[i];
                    }
                }
            }
        }
    }
}

/* g = silu(a) * b, silu(a) = a * sigmoid(a) */
static TK_ATTR void TK_FN(swiglu_fwd)(float *restrict g, const float *restrict a, const float *restrict b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + runc_expf(-a[i]));
        g[i] = (a[i] * s) * b[i];
    }
}

static TK_ATTR void TK_FN(swiglu_bwd)(float *restrict da, float *restrict db, const float *restrict dg,
                                      const float *restrict a, const float *restrict b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + runc_expf(-a[i]));
        db[i] = dg[i] * (a[i] * s);
        da[i] = dg[i] * b[i] * (s * (1.0f + a[i] * (1.0f - s)));
    }
}

/* ---- a worker's share: forward and backward of rows r0..r1 ------------------------ */

static TK_ATTR void TK_FN(run_rows)(worker *w)
{
    runc_trainer *t = w->t;
    const runc_train_config *c = &t->c;
    const int D = c->dim, KV = t->kv_dim, Hd = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    const int Dp = t->Dp, KVp = t->KVp, Hp = t->Hp, Vp = t->Vp;
    const int n0 = w->n0, N = w->n1 - w->n0, s0 = w->s0, S = w->s1 - w->s0;
    const size_t NT = t->max_tok;
    const float *P = t->params;
    float *G = w->grad;
    const float inv_n = 1.0f / (float)t->n_sel;
    const tensor *te_out = &t->tensors[t->out_index], *te_norm = &t->tensors[t->norm_index];
    double loss = 0.0;
    int l, n, s, i;
#define AT(base, stride, row) ((base) + (size_t)(row) * (size_t)(stride))
#define LT(e) (&t->tensors[1 + 9 * l + (e)]) /* a layer's tensors, in build_tensors' order */
#define WT(e) (t->wt + LT(e)->wt_off)
#define WP(e) (t->wp + LT(e)->wp_off)
#define GP(e) (G + LT(e)->off)
#define PP(e) (P + LT(e)->off)
    enum { E_ANORM, E_WQ, E_WK, E_WV, E_WO, E_FNORM, E_W1, E_W2, E_W3 };
    memset(G, 0, t->n_params * sizeof(float));
    w->loss = 0.0;
    if (N == 0) return;
    for (n = n0; n < n0 + N; n++) memcpy(AT(t->x, Dp, n), AT(P + t->emb, D, t->tok[n]), (size_t)D * sizeof(float));
    for (l = 0; l < L; l++) {
        float *x = t->x + (size_t)l * NT * (size_t)Dp, *xo = t->x + (size_t)(l + 1) * NT * (size_t)Dp;
        float *xn1 = t->xn1 + (size_t)l * NT * (size_t)Dp, *xn2 = t->xn2 + (size_t)l * NT * (size_t)Dp;
        float *q = t->q + (size_t)l * NT * (size_t)Dp, *y = t->y + (size_t)l * NT * (size_t)Dp;
        float *xm = t->xm + (size_t)l * NT * (size_t)Dp;
        float *k = t->k + (size_t)l * NT * (size_t)KVp, *v = t->v_ + (size_t)l * NT * (size_t)KVp;
        float *a = t->a + (size_t)l * NT * (size_t)Hp, *b = t->b + (size_t)l * NT * (size_t)Hp;
        float *g = t->g + (size_t)l * NT * (size_t)Hp;
        TK_FN(rmsnorm_fwd)(AT(xn1, Dp, n0), t->rstd1 + (size_t)l * NT + (size_t)n0, AT(x, Dp, n0), Dp, PP(E_ANORM), N,
                           D, c->norm_eps);
        TK_FN(mm_nn)(AT(q, Dp, n0), Dp, AT(xn1, Dp, n0), Dp, WT(E_WQ), Dp, 0, N, D, D);
        TK_FN(mm_nn)(AT(k, KVp, n0), KVp, AT(xn1, Dp, n0), Dp, WT(E_WK), KVp, 0, N, D, KV);
        TK_FN(mm_nn)(AT(v, KVp, n0), KVp, AT(xn1, Dp, n0), Dp, WT(E_WV), KVp, 0, N, D, KV);
        TK_FN(rope)(t, q, D, Dp, n0, n0 + N, 1.0f);
        TK_FN(rope)(t, k, KV, KVp, n0, n0 + N, 1.0f);
        TK_FN(attention_fwd)(t, l, w->r0, w->r1);
        memcpy(AT(xm, Dp, n0), AT(x, Dp, n0), (size_t)N * (size_t)Dp * sizeof(float));
        TK_FN(mm_nn)(AT(xm, Dp, n0), Dp, AT(y, Dp, n0), Dp, WT(E_WO), Dp, 1, N, D, D);
        TK_FN(rmsnorm_fwd)(AT(xn2, Dp, n0), t->rstd2 + (size_t)l * NT + (size_t)n0, AT(xm, Dp, n0), Dp, PP(E_FNORM), N,
                           D, c->norm_eps);
        TK_FN(mm_nn)(AT(a, Hp, n0), Hp, AT(xn2, Dp, n0), Dp, WT(E_W1), Hp, 0, N, D, Hd);
        TK_FN(mm_nn)(AT(b, Hp, n0), Hp, AT(xn2, Dp, n0), Dp, WT(E_W3), Hp, 0, N, D, Hd);
        TK_FN(swiglu_fwd)(AT(g, Hp, n0), AT(a, Hp, n0), AT(b, Hp, n0), (size_t)N * (size_t)Hp);
        memcpy(AT(xo, Dp, n0), AT(xm, Dp, n0), (size_t)N * (size_t)Dp * sizeof(float));
        TK_FN(mm_nn)(AT(xo, Dp, n0), Dp, AT(g, Hp, n0), Hp, WT(E_W2), Dp, 1, N, Hd, D);
    }
    /* classifier and loss at the answer positions */
    {
        const float *xl = t->x + (size_t)L * NT * (size_t)Dp;
        for (s = s0; s < s0 + S; s++)
            TK_FN(rmsnorm_fwd)(AT(t->xnf, Dp, s), t->rstdf + s, AT(xl, Dp, t->sel_tok[s]), Dp, P + t->norm, 1, D,
                               c->norm_eps);
        TK_FN(mm_nn)(AT(t->logits, Vp, s0), Vp, AT(t->xnf, Dp, s0), Dp, t->wt + te_out->wt_off, Vp, 0, S, D, V);
        for (s = s0; s < s0 + S; s++) {
            const float *restrict lg = AT(t->logits, Vp, s);
            float *restrict dl = AT(t->dlog, Vp, s);
            float mx = lg[0];
            double sum = 0.0, lse;
            for (i = 1; i < V; i++)
                if (lg[i] > mx) mx = lg[i];
            for (i = 0; i < V; i++) sum += exp((double)lg[i] - (double)mx);
            lse = (double)mx + log(sum);
            loss += lse - (double)lg[t->sel_tgt[s]];
            for (i = 0; i < V; i++) dl[i] = (float)exp((double)lg[i] - lse) * inv_n;
            dl[t->sel_tgt[s]] -= inv_n;
        }
    }
    w->loss = loss;
    /* ---- backward ---- */
    memset(AT(t->dx, Dp, n0), 0, (size_t)N * (size_t)Dp * sizeof(float));
    {
        const float *xl = t->x + (size_t)L * NT * (size_t)Dp;
        TK_FN(mm_tn)(G + te_out->off, AT(t->dlog, Vp, s0), Vp, AT(t->xnf, Dp, s0), Dp, S, V, D);
        TK_FN(mm_nn)(AT(t->dxf, Dp, s0), Dp, AT(t->dlog, Vp, s0), Vp, t->wp + te_out->wp_off, Dp, 0, S, V, D);
        for (s = s0; s < s0 + S; s++)  /* the final norm's gradient goes straight to the answer rows */
            TK_FN(rmsnorm_bwd)(AT(t->dx, Dp, t->sel_tok[s]), G + te_norm->off, AT(t->dxf, Dp, s),
                               AT(xl, Dp, t->sel_tok[s]), t->rstdf + s, Dp, P + t->norm, 1, D);
    }
    for (l = L - 1; l >= 0; l--) {
        const float *x = t->x + (size_t)l * NT * (size_t)Dp;
        const float *xn1 = t->xn1 + (size_t)l * NT * (size_t)Dp, *xn2 = t->xn2 + (size_t)l * NT * (size_t)Dp;
        const float *y = t->y + (size_t)l * NT * (size_t)Dp, *xm = t->xm + (size_t)l * NT * (size_t)Dp;
        const float *a = t->a + (size_t)l * NT * (size_t)Hp, *b = t->b + (size_t)l * NT * (size_t)Hp;
        const float *g = t->g + (size_t)l * NT * (size_t)Hp;
        /* feed-forward: xo = xm + g W2^T */
        TK_FN(mm_nn)(AT(t->dg, Hp, n0), Hp, AT(t->dx, Dp, n0), Dp, WP(E_W2), Hp, 0, N, D, Hd);
        TK_FN(mm_tn)(GP(E_W2), AT(t->dx, Dp, n0), Dp, AT(g, Hp, n0), Hp, N, D, Hd);
        TK_FN(swiglu_bwd)(AT(t->da, Hp, n0), AT(t->db, Hp, n0), AT(t->dg, Hp, n0), AT(a, Hp, n0), AT(b, Hp, n0),
                          (size_t)N * (size_t)Hp);
        TK_FN(mm_nn)(AT(t->dxn, Dp, n0), Dp, AT(t->da, Hp, n0), Hp, WP(E_W1), Dp, 0, N, Hd, D);
        TK_FN(mm_nn)(AT(t->dxn, Dp, n0), Dp, AT(t->db, Hp, n0), Hp, WP(E_W3), Dp, 1, N, Hd, D);
        TK_FN(mm_tn)(GP(E_W1), AT(t->da, Hp, n0), Hp, AT(xn2, Dp, n0), Dp, N, Hd, D);
        TK_FN(mm_tn)(GP(E_W3), AT(t->db, Hp, n0), Hp, AT(xn2, Dp, n0), Dp, N, Hd, D);
        TK_FN(rmsnorm_bwd)(AT(t->dx, Dp, n0), GP(E_FNORM), AT(t->dxn, Dp, n0), AT(xm, Dp, n0),
                           t->rstd2 + (size_t)l * NT + (size_t)n0, Dp, PP(E_FNORM), N, D);
        /* attention: xm = x + y Wo^T */
        TK_FN(mm_nn)(AT(t->dy, Dp, n0), Dp, AT(t->dx, Dp, n0), Dp, WP(E_WO), Dp, 0, N, D, D);
        TK_FN(mm_tn)(GP(E_WO), AT(t->dx, Dp, n0), Dp, AT(y, Dp, n0), Dp, N, D, D);
        TK_FN(attention_bwd)(t, l, w->r0, w->r1, w->scratch);
        TK_FN(rope)(t, t->dq, D, Dp, n0, n0 + N, -1.0f);
        TK_FN(rope)(t, t->dk, KV, KVp, n0, n0 + N, -1.0f);
        TK_FN(mm_nn)(AT(t->dxn, Dp, n0), Dp, AT(t->dq, Dp, n0), Dp, WP(E_WQ), Dp, 0, N, D, D);
        TK_FN(mm_nn)(AT(t->dxn, Dp, n0), Dp, AT(t->dk, KVp, n0), KVp, WP(E_WK), Dp, 1, N, KV, D);
        TK_FN(mm_nn)(AT(t->dxn, Dp, n0), Dp, AT(t->dv, KVp, n0), KVp, WP(E_WV), Dp, 1, N, KV, D);
        TK_FN(mm_tn)(GP(E_WQ), AT(t->dq, Dp, n0), Dp, AT(xn1, Dp, n0), Dp, N, D, D);
        TK_FN(mm_tn)(GP(E_WK), AT(t->dk, KVp, n0), KVp, AT(xn1, Dp, n0), Dp, N, KV, D);
        TK_FN(mm_tn)(GP(E_WV), AT(t->dv, KVp, n0), KVp, AT(xn1, Dp, n0), Dp, N, KV, D);
        TK_FN(rmsnorm_bwd)(AT(t->dx, Dp, n0), GP(E_ANORM), AT(t->dxn, Dp, n0), AT(x, Dp, n0),
                           t->rstd1 + (size_t)l * NT + (size_t)n0, Dp, PP(E_ANORM), N, D);
    }
    /* embedding */
    for (n = n0; n < n0 + N; n++) {
        float *restrict ge = AT(G + t->emb, D, t->tok[n]);
        const float *restrict d = AT(t->dx, Dp, n);
        for (i = 0; i < D; i++) ge[i] += d[i];
    }
#undef AT
#undef LT
#undef WT
#undef WP
#undef GP
#undef PP
}

#undef TK_MADD
#undef TK_LD
#undef TK_ST
