/*
 * test_runc.c - tests of the runc library through its public API.
 *
 * Model files are built in memory from random weights (v0, v1, v2; tied and
 * untied classifiers; grouped-query attention; misaligned Q8_0 scales) and
 * checked against a naive double-precision forward that recomputes the whole
 * sequence without a cache. Then a table of corrupt model files (one per
 * header field and boundary), tokenizer corruptions, encoder round trips,
 * the samplers, generation and the TinyMath problem convention.
 *
 * Prints one line per failure and a closing "N passed, M failed"; exit status
 * 0 only when nothing failed.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>
#define HAVE_MKSTEMP 1
#endif

#define TEST_PROGRAM "test_runc"
#include "test_util.h" /* CHECK, n_pass, n_fail, buf and put_*, put_q8 */

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers: rng, byte buffers, temp files                                    */
/* ------------------------------------------------------------------------ */

static unsigned long long rng_state = 0x1234567ull;

static double urand(void) /* uniform [0, 1) */
{
    return (double)(xorshift64s(&rng_state) >> 11) / 9007199254740992.0;
}

static float srand1(void) /* uniform [-1, 1) */
{
    return (float)(2.0 * urand() - 1.0);
}

/* A copy of b's bytes in a fresh malloc'd block of exactly n bytes (so that
 * ASan catches any read past the end), at least 1 byte allocated. */
static unsigned char *dup_bytes(const unsigned char *p, size_t n)
{
    unsigned char *q = (unsigned char *)malloc(n ? n : 1);
    if (!q) exit(2);
    if (n) memcpy(q, p, n);
    return q;
}

static char tmp_path[64];

static const char *write_temp(const void *data, size_t n)
{
    FILE *f;
#ifdef HAVE_MKSTEMP
    int fd;
    strcpy(tmp_path, "/tmp/test_runc_XXXXXX");
    fd = mkstemp(tmp_path);
    if (fd < 0) exit(2);
    close(fd);
#else
    strcpy(tmp_path, "test_runc_tmp.bin");
#endif
    f = fopen(tmp_path, "wb");
    if (!f) exit(2);
    if (n && fwrite(data, 1, n, f) != n) exit(2);
    fclose(f);
    return tmp_path;
}

/* ------------------------------------------------------------------------ */
/* random models and their files                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int version;        /* 0, 1, 2 */
    int dim, hidden, layers, heads, kv_heads, vocab, seq;
    int shared;
    int group;          /* v2 */
    int ext;            /* write the TinyMath extension */
    float theta, eps;
} spec;

typedef struct {
    spec sp;
    int hs, kv;
    /* fp32 weights, per-layer tensors stacked; for v2 the dequantized ones
     * are in dq_* (the reference runs on what the file really holds) */
    float *tok, *rms_att, *rms_ffn, *rms_final, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *cls;
} weights;

static float *rand_mat(size_t n, int fan_in)
{
    float *w = (float *)malloc(n * sizeof(float));
    float a = (float)(sqrt(3.0) / sqrt((double)fan_in));
    size_t i;
    if (!w) exit(2);
    for (i = 0; i < n; i++) w[i] = a * srand1();
    return w;
}

static float *rand_norm(size_t n)
{
    float *w = (float *)malloc(n * sizeof(float));
    size_t i;
    if (!w) exit(2);
    for (i = 0; i < n; i++) w[i] = 1.0f + 0.2f * srand1();
    return w;
}

static weights make_weights(spec sp)
{
    weights w;
    size_t D = (size_t)sp.dim, H = (size_t)sp.hidden, L = (size_t)sp.layers, V = (size_t)sp.vocab;
    memset(&w, 0, sizeof w);
    w.sp = sp;
    w.hs = sp.dim / sp.heads;
    w.kv = w.hs * sp.kv_heads;
    w.tok = rand_mat(V * D, 3);
    w.rms_att = rand_norm(L * D);
    w.rms_ffn = rand_norm(L * D);
    w.rms_final = rand_norm(D);
    w.wq = rand_mat(L * D * D, sp.dim);
    w.wk = rand_mat(L * (size_t)w.kv * D, sp.dim);
    w.wv = rand_mat(L * (size_t)w.kv * D, sp.dim);
    w.wo = rand_mat(L * D * D, sp.dim);
    w.w1 = rand_mat(L * H * D, sp.dim);
    w.w2 = rand_mat(L * D * H, sp.hidden);
    w.w3 = rand_mat(L * H * D, sp.dim);
    w.cls = sp.shared ? w.tok : rand_mat(V * D, sp.dim);
    return w;
}

static void free_weights(weights *w)
{
    free(w->tok);
    free(w->rms_att);
    free(w->rms_ffn);
    free(w->rms_final);
    free(w->wq);
    free(w->wk);
    free(w->wv);
    free(w->wo);
    free(w->w1);
    free(w->w2);
    free(w->w3);
    if (!w->sp.shared) free(w->cls);
}

static void put_header_v12(buf *b, const spec *sp)
{
    const int32_t cfg[7] = {sp->dim, sp->hidden, sp->layers, sp->heads, sp->kv_heads, sp->vocab, sp->seq};
    put_model_header(b, sp->version, cfg, sp->shared, sp->group, 240);
    if (sp->ext) {
        put(b, "TMx1", 4);
        put_f32(b, sp->theta);
        put_f32(b, sp->eps);
    }
    pad_to(b, 256);
}

/* Serialize w in its spec's format; for v2 this also quantizes w in place. */
static buf write_model(weights *w)
{
    const spec *sp = &w->sp;
    size_t D = (size_t)sp->dim, H = (size_t)sp->hidden, L = (size_t)sp->layers, V = (size_t)sp->vocab;
    size_t KV = (size_t)w->kv, l, i;
    buf b;
    memset(&b, 0, sizeof b);
    if (sp->version == 0) {
        put_i32(&b, sp->dim);
        put_i32(&b, sp->hidden);
        put_i32(&b, sp->layers);
        put_i32(&b, sp->heads);
        put_i32(&b, sp->kv_heads);
        put_i32(&b, sp->shared ? sp->vocab : -sp->vocab);
        put_i32(&b, sp->seq);
        put_floats(&b, w->tok, V * D);
        put_floats(&b, w->rms_att, L * D);
        put_floats(&b, w->wq, L * D * D);
        put_floats(&b, w->wk, L * KV * D);
        put_floats(&b, w->wv, L * KV * D);
        put_floats(&b, w->wo, L * D * D);
        put_floats(&b, w->rms_ffn, L * D);
        put_floats(&b, w->w1, L * H * D);
        put_floats(&b, w->w2, L * D * H);
        put_floats(&b, w->w3, L * H * D);
        put_floats(&b, w->rms_final, D);
        for (i = 0; i < (size_t)sp->seq * (size_t)w->hs; i++) put_f32(&b, 7.0f); /* unused RoPE tables */
        if (!sp->shared) put_floats(&b, w->cls, V * D);
        return b;
    }
    put_header_v12(&b, sp);
    put_floats(&b, w->rms_att, L * D);
    put_floats(&b, w->rms_ffn, L * D);
    put_floats(&b, w->rms_final, D);
    if (sp->version == 1) {
        put_floats(&b, w->tok, V * D);
        put_floats(&b, w->wq, L * D * D);
        put_floats(&b, w->wk, L * KV * D);
        put_floats(&b, w->wv, L * KV * D);
        put_floats(&b, w->wo, L * D * D);
        put_floats(&b, w->w1, L * H * D);
        put_floats(&b, w->w2, L * D * H);
        put_floats(&b, w->w3, L * H * D);
        if (!sp->shared) put_floats(&b, w->cls, V * D);
    } else {
        int gs = sp->group;
        put_q8(&b, w->tok, V * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->wq + l * D * D, D * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->wk + l * KV * D, KV * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->wv + l * KV * D, KV * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->wo + l * D * D, D * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->w1 + l * H * D, H * D, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->w2 + l * D * H, D * H, gs);
        for (l = 0; l < L; l++) put_q8(&b, w->w3 + l * H * D, H * D, gs);
        if (!sp->shared) put_q8(&b, w->cls, V * D, gs);
    }
    return b;
}

/* ------------------------------------------------------------------------ */
/* the naive reference: whole sequence, no cache, double precision           */
/* ------------------------------------------------------------------------ */

/* runq.c's activation quantization, emulated: x is replaced by its Q8_0
 * round trip (computed in float as the library does). */
static void fake_quant(double *x, int n, int gs)
{
    int g, i;
    for (g = 0; g < n / gs; g++) {
        float mx = 0.0f, scale;
        for (i = 0; i < gs; i++) mx = fmaxf(mx, fabsf((float)x[g * gs + i]));
        scale = mx / 127.0f;
        for (i = 0; i < gs; i++) {
            float q = scale > 0 ? roundf((float)x[g * gs + i] / scale) : 0.0f;
            x[g * gs + i] = (double)q * (double)scale;
        }
    }
}

static void ref_matvec(double *out, const float *w, const double *x, int n, int d, int gs)
{
    double *xx = (double *)malloc((size_t)n * sizeof(double));
    int i, j;
    memcpy(xx, x, (size_t)n * sizeof(double));
    if (gs) fake_quant(xx, n, gs);
    for (i = 0; i < d; i++) {
        double s = 0;
        for (j = 0; j < n; j++) s += (double)w[(size_t)i * n + j] * xx[j];
        out[i] = s;
    }
    free(xx);
}

static void ref_rmsnorm(double *out, const double *x, const float *w, int n, double eps)
{
    double ss = 0;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0 / sqrt(ss / n + eps);
    for (i = 0; i < n; i++) out[i] = w[i] * x[i] * ss;
}

/* logits (T x V) of every position of tokens[0..T) */
static void ref_forward(const weights *w, const int *tokens, int T, double *logits)
{
    const spec *sp = &w->sp;
    int D = sp->dim, H = sp->hidden, KV = w->kv, hs = w->hs, L = sp->layers, V = sp->vocab;
    int gs = sp->version == 2 ? sp->group : 0, kv_mul = sp->heads / sp->kv_heads;
    double theta = sp->ext ? sp->theta : 10000.0, eps = sp->ext ? sp->eps : 1e-5;
    double *h = (double *)calloc((size_t)T * D, sizeof(double));
    double *xn = (double *)calloc((size_t)(D > H ? D : H), sizeof(double));
    double *q = (double *)calloc((size_t)T * D, sizeof(double));
    double *k = (double *)calloc((size_t)T * KV, sizeof(double));
    double *v = (double *)calloc((size_t)T * KV, sizeof(double));
    double *att = (double *)calloc((size_t)T * D, sizeof(double));
    double *tmp = (double *)calloc((size_t)(D > H ? D : H), sizeof(double));
    double *h1 = (double *)calloc((size_t)H, sizeof(double));
    double *h3 = (double *)calloc((size_t)H, sizeof(double));
    double *sc = (double *)calloc((size_t)T, sizeof(double));
    int t, l, i, j, hd;

    for (t = 0; t < T; t++)
        for (i = 0; i < D; i++) h[t * D + i] = w->tok[(size_t)tokens[t] * D + i];
    for (l = 0; l < L; l++) {
        const float *wq = w->wq + (size_t)l * D * D, *wk = w->wk + (size_t)l * KV * D;
        const float *wv = w->wv + (size_t)l * KV * D, *wo = w->wo + (size_t)l * D * D;
        const float *w1 = w->w1 + (size_t)l * H * D, *w2 = w->w2 + (size_t)l * D * H;
        const float *w3 = w->w3 + (size_t)l * H * D;
        for (t = 0; t < T; t++) {
            ref_rmsnorm(xn, h + t * D, w->rms_att + (size_t)l * D, D, eps);
            ref_matvec(q + t * D, wq, xn, D, D, gs);
            ref_matvec(k + t * KV, wk, xn, D, KV, gs);
            ref_matvec(v + t * KV, wv, xn, D, KV, gs);
            for (hd = 0; hd < D / hs; hd++)
                for (i = 0; i < hs / 2; i++) {
                    double freq = 1.0 / pow(theta, (2.0 * i) / hs), a = t * freq, c = cos(a), s = sin(a);
                    double *p = q + t * D + hd * hs + 2 * i, x0 = p[0], x1 = p[1];
                    p[0] = x0 * c - x1 * s;
                    p[1] = x0 * s + x1 * c;
                    if (hd < sp->kv_heads) {
                        p = k + t * KV + hd * hs + 2 * i;
                        x0 = p[0];
                        x1 = p[1];
                        p[0] = x0 * c - x1 * s;
                        p[1] = x0 * s + x1 * c;
                    }
                }
        }
        for (t = 0; t < T; t++) {
            for (hd = 0; hd < sp->heads; hd++) {
                double mx = -1e300, sum = 0;
                int kh = hd / kv_mul;
                for (j = 0; j <= t; j++) {
                    double s = 0;
                    for (i = 0; i < hs; i++) s += q[t * D + hd * hs + i] * k[j * KV + kh * hs + i];
                    sc[j] = s / sqrt((double)hs);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (j = 0; j <= t; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (i = 0; i < hs; i++) {
                    double o = 0;
                    for (j = 0; j <= t; j++) o += sc[j] / sum * v[j * KV + kh * hs + i];
                    att[t * D + hd * hs + i] = o;
                }
            }
        }
        for (t = 0; t < T; t++) {
            ref_matvec(tmp, wo, att + t * D, D, D, gs);
            for (i = 0; i < D; i++) h[t * D + i] += tmp[i];
            ref_rmsnorm(xn, h + t * D, w->rms_ffn + (size_t)l * D, D, eps);
            ref_matvec(h1, w1, xn, D, H, gs);
            ref_matvec(h3, w3, xn, D, H, gs);
            for (i = 0; i < H; i++) h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            ref_matvec(tmp, w2, h1, H, D, gs);
            for (i = 0; i < D; i++) h[t * D + i] += tmp[i];
        }
    }
    for (t = 0; t < T; t++) {
        ref_rmsnorm(xn, h + t * D, w->rms_final, D, eps);
        ref_matvec(logits + (size_t)t * V, w->cls, xn, D, V, gs);
    }
    free(h);
    free(xn);
    free(q);
    free(k);
    free(v);
    free(att);
    free(tmp);
    free(h1);
    free(h3);
    free(sc);
}

/* ------------------------------------------------------------------------ */
/* model tests                                                               */
/* ------------------------------------------------------------------------ */

static const spec specs[] = {
    /* name             ver dim hid  L  nh kv voc seq sh  gs ext theta   eps */
    {"v0 tied MHA",      0, 16, 40, 2, 4, 4, 24, 12, 1, 0, 0, 0, 0},
    {"v0 untied GQA",    0, 16, 40, 2, 4, 2, 24, 12, 0, 0, 0, 0, 0},
    {"v1 tied MQA ext",  1, 16, 36, 2, 4, 1, 19, 10, 1, 0, 1, 500.0f, 1e-3f},
    {"v1 untied",        1, 24, 64, 3, 3, 3, 30, 9, 0, 0, 0, 0, 0},
    {"v1 one layer",     1, 8, 4, 1, 1, 1, 5, 6, 1, 0, 0, 0, 0},
    {"v2 tied GQA",      2, 32, 64, 2, 4, 2, 24, 12, 1, 16, 1, 10000.0f, 1e-5f},
    {"v2 untied odd gs", 2, 6, 9, 2, 3, 1, 13, 8, 0, 3, 1, 1000.0f, 1e-4f},
    {"v2 untied gs64",   2, 64, 128, 1, 8, 4, 17, 8, 0, 64, 0, 0, 0},
};
#define N_SPECS ((int)(sizeof specs / sizeof specs[0]))

static double max_abs_diff_fd(const float *a, const double *b, size_t n, double *scale)
{
    double m = 0, s = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    if (scale) *scale = s;
    return m;
}

/* Every position's logits with the cache equal the naive recompute. */
static void test_forward_matches_reference(void)
{
    int si;
    for (si = 0; si < N_SPECS; si++) {
        weights w = make_weights(specs[si]);
        buf file = write_model(&w); /* for v2, w now holds the dequantized weights */
        runc_model *m = NULL;
        runc_state *st = NULL;
        runc_error err;
        int T = w.sp.seq, V = w.sp.vocab, t, rc;
        int *tokens = (int *)malloc((size_t)T * sizeof(int));
        double *ref = (double *)malloc((size_t)T * V * sizeof(double));
        float *got = (float *)malloc((size_t)T * V * sizeof(float));
        double worst = 0, scale = 0, tol = w.sp.version == 2 ? 2e-3 : 2e-5;
        const runc_config *c;

        for (t = 0; t < T; t++) tokens[t] = (int)(urand() * V);
        rc = runc_model_open_buffer(&m, file.p, file.n, 0, &err);
        CHECK(rc == RUNC_OK, "%s: open: %s", w.sp.name, err.message);
        if (rc != RUNC_OK) goto next;
        c = runc_model_config(m);
        CHECK(c->version == w.sp.version && c->dim == w.sp.dim && c->hidden_dim == w.sp.hidden &&
                  c->n_layers == w.sp.layers && c->n_heads == w.sp.heads && c->n_kv_heads == w.sp.kv_heads &&
                  c->vocab_size == w.sp.vocab && c->max_seq_len == w.sp.seq &&
                  c->shared_classifier == w.sp.shared && c->group_size == w.sp.group &&
                  c->file_bytes == file.n && c->has_extension == w.sp.ext,
              "%s: config fields", w.sp.name);
        CHECK(c->rope_theta == (w.sp.ext ? w.sp.theta : 10000.0f) && c->norm_eps == (w.sp.ext ? w.sp.eps : 1e-5f),
              "%s: rope_theta %g norm_eps %g", w.sp.name, (double)c->rope_theta, (double)c->norm_eps);
        rc = runc_state_open(&st, m, 0, &err);
        CHECK(rc == RUNC_OK, "%s: state: %s", w.sp.name, err.message);
        if (rc != RUNC_OK) goto next;
        rc = runc_forward_tokens(st, tokens, T, 0, got, &err);
        CHECK(rc == RUNC_OK, "%s: forward: %s", w.sp.name, err.message);
        ref_forward(&w, tokens, T, ref);
        for (t = 0; t < T; t++) {
            double s, d = max_abs_diff_fd(got + (size_t)t * V, ref + (size_t)t * V, (size_t)V, &s);
            d /= (s > 1 ? s : 1);
            if (d > worst) worst = d;
        }
        (void)scale;
        if (getenv("TEST_RUNC_VERBOSE")) printf("  %-18s max relative diff %.3g\n", w.sp.name, worst);
        CHECK(worst <= tol, "%s: cached forward vs naive recompute: max relative diff %.3g > %.1g", w.sp.name,
              worst, tol);

        /* the same positions run again on the same state give the same logits
         * (the cache is overwritten, not appended) */
        {
            const float *lg;
            rc = runc_forward(st, tokens[0], 0, &lg, &err);
            CHECK(rc == RUNC_OK && memcmp(lg, got, (size_t)V * sizeof(float)) == 0, "%s: rerun position 0",
                  w.sp.name);
        }
    next:
        runc_state_close(st);
        runc_model_close(m);
        free(tokens);
        free(ref);
        free(got);
        free(file.p);
        free_weights(&w);
    }
}

/* logits of `tokens` for a model file, or NULL */
static float *logits_of(const unsigned char *data, size_t n, int flags, const int *tokens, int T, int *V)
{
    runc_model *m;
    runc_state *st;
    runc_error err;
    float *out = NULL;
    if (runc_model_open_buffer(&m, data, n, flags, &err) != RUNC_OK) return NULL;
    *V = runc_model_config(m)->vocab_size;
    if (runc_state_open(&st, m, 0, &err) == RUNC_OK) {
        out = (float *)malloc((size_t)T * *V * sizeof(float));
        if (runc_forward_tokens(st, tokens, T, 0, out, &err) != RUNC_OK) {
            free(out);
            out = NULL;
        }
        runc_state_close(st);
    }
    runc_model_close(m);
    return out;
}

static float *logits_of_file(const char *path, int flags, const int *tokens, int T, int V, runc_error *err)
{
    runc_model *m;
    runc_state *st;
    float *out = NULL;
    if (runc_model_open(&m, path, flags, err) != RUNC_OK) return NULL;
    if (runc_state_open(&st, m, 0, err) == RUNC_OK) {
        out = (float *)malloc((size_t)T * V * sizeof(float));
        if (runc_forward_tokens(st, tokens, T, 0, out, err) != RUNC_OK) {
            free(out);
            out = NULL;
        }
        runc_state_close(st);
    }
    runc_model_close(m);
    return out;
}

/* A buffer, a copied buffer, a misaligned buffer, an mmap'd file and a read
 * file all give bit-identical logits. */
static void test_load_paths_agree(void)
{
    int si;
    for (si = 0; si < N_SPECS; si++) {
        weights w = make_weights(specs[si]);
        buf file = write_model(&w);
        int T = 5, V = 0, t;
        int tokens[5];
        float *a, *b, *c, *d, *e;
        unsigned char *mis = (unsigned char *)malloc(file.n + 1);
        runc_error err;
        size_t bytes;
        for (t = 0; t < T; t++) tokens[t] = (int)(urand() * w.sp.vocab);
        memcpy(mis + 1, file.p, file.n);
        a = logits_of(file.p, file.n, 0, tokens, T, &V);
        b = logits_of(file.p, file.n, RUNC_OPEN_COPY, tokens, T, &V);
        c = logits_of(mis + 1, file.n, 0, tokens, T, &V);
        write_temp(file.p, file.n);
        d = logits_of_file(tmp_path, 0, tokens, T, V, &err);
        CHECK(d != NULL, "%s: open file (mmap): %s", w.sp.name, err.message);
        e = logits_of_file(tmp_path, RUNC_OPEN_NO_MMAP, tokens, T, V, &err);
        CHECK(e != NULL, "%s: open file (read): %s", w.sp.name, err.message);
        remove(tmp_path);
        bytes = (size_t)T * V * sizeof(float);
        CHECK(a && b && c && d && e, "%s: all load paths open", w.sp.name);
        if (a && b && c && d && e)
            CHECK(!memcmp(a, b, bytes) && !memcmp(a, c, bytes) && !memcmp(a, d, bytes) && !memcmp(a, e, bytes),
                  "%s: buffer, copy, misaligned, mmap and read give the same logits", w.sp.name);
        free(a);
        free(b);
        free(c);
        free(d);
        free(e);
        free(mis);
        free(file.p);
        free_weights(&w);
    }
}

/* The same weights as fp32 (v1) and int8 (v2): logits close. */
static void test_int8_close_to_fp32(void)
{
    spec s1 = {"fp32", 1, 64, 128, 2, 4, 2, 40, 16, 1, 0, 0, 0, 0};
    spec s2 = s1;
    weights w1, w2;
    buf f1, f2;
    int T = 16, V = 0, t, tokens[16];
    float *a, *b;
    unsigned long long saved;
    s2.version = 2;
    s2.group = 32;
    s2.name = "int8";
    saved = rng_state;
    w1 = make_weights(s1);
    rng_state = saved;
    w2 = make_weights(s2); /* identical random weights */
    f1 = write_model(&w1);
    f2 = write_model(&w2);
    for (t = 0; t < T; t++) tokens[t] = (int)(urand() * s1.vocab);
    a = logits_of(f1.p, f1.n, 0, tokens, T, &V);
    b = logits_of(f2.p, f2.n, 0, tokens, T, &V);
    CHECK(a && b, "int8 vs fp32: both open");
    if (a && b) {
        double num = 0, den = 0, mx = 0;
        int agree = 0;
        for (t = 0; t < T * V; t++) {
            double d = (double)a[t] - b[t];
            num += d * d;
            den += (double)a[t] * a[t];
            if (fabs(d) > mx) mx = fabs(d);
        }
        for (t = 0; t < T; t++) {
            int i, ia = 0, ib = 0;
            for (i = 1; i < V; i++) {
                if (a[t * V + i] > a[t * V + ia]) ia = i;
                if (b[t * V + i] > b[t * V + ib]) ib = i;
            }
            agree += ia == ib;
        }
        CHECK(sqrt(num / den) < 0.03, "int8 vs fp32: relative RMS error %.4f", sqrt(num / den));
        CHECK(agree >= T - 2, "int8 vs fp32: argmax agrees at %d of %d positions", agree, T);
    }
    free(a);
    free(b);
    free(f1.p);
    free(f2.p);
    free_weights(&w1);
    free_weights(&w2);
}

/* ------------------------------------------------------------------------ */
/* corrupt model files                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *what;
    unsigned char *data;
    size_t size;
    int code;
    const char *needle; /* must appear in the message */
} corrupt;

static corrupt table[128];
static int n_table;

static unsigned char *mutated(const buf *base, size_t size)
{
    unsigned char *p = (unsigned char *)calloc(size ? size : 1, 1);
    if (!p) exit(2);
    memcpy(p, base->p, size < base->n ? size : base->n);
    return p;
}

static void add(const char *what, unsigned char *data, size_t size, int code, const char *needle)
{
    corrupt *c = &table[n_table++];
    c->what = what;
    c->data = data;
    c->size = size;
    c->code = code;
    c->needle = needle;
}

static void add_i32(const buf *base, const char *what, size_t off, int32_t v, int code, const char *needle)
{
    unsigned char *p = mutated(base, base->n);
    memcpy(p + off, &v, 4);
    add(what, p, base->n, code, needle);
}

static void add_cut(const buf *base, const char *what, size_t size, int code, const char *needle)
{
    add(what, mutated(base, size), size, code, needle);
}

static void build_corrupt_table(const buf *v0, const buf *v1, const buf *v2)
{
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                         "n_kv_heads", "vocab_size", "max_seq_len"};
    static const int caps[7] = {RUNC_MAX_DIM, RUNC_MAX_HIDDEN_DIM, RUNC_MAX_LAYERS, RUNC_MAX_HEADS,
                                RUNC_MAX_HEADS, RUNC_MAX_VOCAB, RUNC_MAX_SEQ_LEN};
    int i;
    unsigned char *p;

    add_cut(v1, "empty", 0, RUNC_E_EMPTY, "empty");
    add_cut(v1, "3 bytes", 3, RUNC_E_TRUNCATED, "too short");
    add_cut(v1, "magic only", 4, RUNC_E_TRUNCATED, "after the magic");
    add_cut(v1, "magic + version", 8, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v1, "cut in the params", 20, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v1, "cut after the params", 36, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v2, "cut before group size", 37, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v2, "cut inside group size", 39, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v2, "cut inside extension", 244, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v1, "cut at 255", 255, RUNC_E_TRUNCATED, "header truncated");
    add_cut(v1, "header only", 256, RUNC_E_TRUNCATED, "truncated");
    add_cut(v1, "last byte missing", v1->n - 1, RUNC_E_TRUNCATED, "truncated");
    add_cut(v2, "v2 last byte missing", v2->n - 1, RUNC_E_TRUNCATED, "truncated");
    add_cut(v0, "v0 cut in header", 10, RUNC_E_TRUNCATED, "v0");
    add_cut(v0, "v0 cut at 27", 27, RUNC_E_TRUNCATED, "v0");
    add_cut(v0, "v0 header only", 28, RUNC_E_TRUNCATED, "truncated");
    add_cut(v0, "v0 last byte missing", v0->n - 1, RUNC_E_TRUNCATED, "truncated");
    add_cut(v1, "one trailing byte", v1->n + 1, RUNC_E_TRAILING, "trailing");
    add_cut(v2, "v2 trailing float", v2->n + 4, RUNC_E_TRAILING, "trailing");
    add_cut(v0, "v0 trailing bytes", v0->n + 8, RUNC_E_TRAILING, "trailing");

    add_i32(v1, "bad magic", 0, 0x616b3433, RUNC_E_MAGIC, "magic");
    add_i32(v1, "text file", 0, 0x6c6c6568 /* "hell" */, RUNC_E_MAGIC, "magic");
    add_i32(v1, "version 3", 4, 3, RUNC_E_VERSION, "version 3");
    add_i32(v1, "version 0 with magic", 4, 0, RUNC_E_VERSION, "version 0");
    add_i32(v1, "version -1", 4, -1, RUNC_E_VERSION, "version -1");
    /* a version that does not match the layout: v1 read as v2 has no group size (zero padding),
     * v2 read as v1 is int8 data a quarter the size fp32 needs */
    add_i32(v1, "v1 file labelled version 2", 4, 2, RUNC_E_GROUP, "group_size = 0");
    add_i32(v2, "v2 file labelled version 1", 4, 1, RUNC_E_TRUNCATED, "truncated");

    for (i = 0; i < 7; i++) {
        static char what[7][3][48];
        snprintf(what[i][0], sizeof what[i][0], "v1 %s = 0", names[i]);
        snprintf(what[i][1], sizeof what[i][1], "v1 %s = -3", names[i]);
        snprintf(what[i][2], sizeof what[i][2], "v1 %s above cap", names[i]);
        add_i32(v1, what[i][0], 8 + 4 * (size_t)i, 0, RUNC_E_FIELD, names[i]);
        add_i32(v1, what[i][1], 8 + 4 * (size_t)i, -3, RUNC_E_FIELD, names[i]);
        add_i32(v1, what[i][2], 8 + 4 * (size_t)i, caps[i] + 1, RUNC_E_FIELD, names[i]);
    }
    add_i32(v1, "v1 dim = INT_MAX", 8, INT32_MAX, RUNC_E_FIELD, "dim");
    add_i32(v1, "v1 vocab = INT_MIN", 28, INT32_MIN, RUNC_E_FIELD, "vocab_size");
    add_i32(v0, "v0 dim = 0", 0, 0, RUNC_E_FIELD, "dim");
    add_i32(v0, "v0 dim = -16", 0, -16, RUNC_E_FIELD, "dim");
    add_i32(v0, "v0 dim above cap", 0, RUNC_MAX_DIM + 2, RUNC_E_FIELD, "dim");
    add_i32(v0, "v0 n_layers = 0", 8, 0, RUNC_E_FIELD, "n_layers");
    add_i32(v0, "v0 vocab = INT_MIN", 20, INT32_MIN, RUNC_E_FIELD, "vocab_size");
    add_i32(v0, "v0 max_seq_len huge", 24, INT32_MAX, RUNC_E_FIELD, "max_seq_len");

    /* v1 base: dim 16, hidden 36, n_heads 4, n_kv_heads 2 */
    add_i32(v1, "heads do not divide dim", 20, 3, RUNC_E_SHAPE, "does not divide dim");
    add_i32(v1, "more heads than dim", 20, 32, RUNC_E_SHAPE, "does not divide dim");
    add_i32(v1, "kv heads do not divide heads", 24, 3, RUNC_E_SHAPE, "n_kv_heads");
    add_i32(v1, "kv heads above heads", 24, 8, RUNC_E_SHAPE, "n_kv_heads");
    p = mutated(v1, v1->n); /* dim 12, n_heads 4: head size 3 */
    {
        int32_t dim = 12, heads = 4;
        memcpy(p + 8, &dim, 4);
        memcpy(p + 20, &heads, 4);
    }
    add("odd head size", p, v1->n, RUNC_E_SHAPE, "odd");

    p = mutated(v1, v1->n);
    p[36] = 2;
    add("shared flag 2", p, v1->n, RUNC_E_FLAG, "shared_classifier");
    p = mutated(v2, v2->n);
    p[36] = 255;
    add("v2 shared flag 255", p, v2->n, RUNC_E_FLAG, "shared_classifier");

    /* v2 base: dim 32, hidden 64, group 16 (at the unaligned offset 37) */
    add_i32(v2, "group size 0", 37, 0, RUNC_E_GROUP, "positive");
    add_i32(v2, "group size -16", 37, -16, RUNC_E_GROUP, "positive");
    add_i32(v2, "group size not dividing dim", 37, 12, RUNC_E_GROUP, "dim");
    add_i32(v2, "group size above dim", 37, 64, RUNC_E_GROUP, "dim");
    p = mutated(v2, v2->n); /* hidden 72: 16 divides dim 32 but not 72 */
    {
        int32_t hidden = 72;
        memcpy(p + 12, &hidden, 4);
    }
    add("group size not dividing hidden_dim", p, v2->n, RUNC_E_GROUP, "hidden_dim");

    /* extension (v1 base has one: theta 500, eps 1e-3) */
    {
        float bad[4];
        const char *whats[4] = {"rope_theta 0", "rope_theta -1", "rope_theta NaN", "rope_theta inf"};
        bad[0] = 0.0f;
        bad[1] = -1.0f;
        bad[2] = (float)NAN;
        bad[3] = (float)INFINITY;
        for (i = 0; i < 4; i++) {
            p = mutated(v1, v1->n);
            memcpy(p + 244, &bad[i], 4);
            add(whats[i], p, v1->n, RUNC_E_EXTENSION, "rope_theta");
        }
        p = mutated(v1, v1->n);
        memcpy(p + 248, &bad[0], 4);
        add("norm_eps 0", p, v1->n, RUNC_E_EXTENSION, "norm_eps");
        p = mutated(v1, v1->n);
        memcpy(p + 248, &bad[2], 4);
        add("norm_eps NaN", p, v1->n, RUNC_E_EXTENSION, "norm_eps");
        p = mutated(v1, v1->n);
        memcpy(p + 240, "XYZ1", 4);
        add("unknown extension", p, v1->n, RUNC_E_EXTENSION, "unknown header extension");
    }

    /* sizes whose products overflow (every field within its cap) */
    p = mutated(v1, v1->n);
    {
        int32_t f[7] = {RUNC_MAX_DIM, RUNC_MAX_HIDDEN_DIM, RUNC_MAX_LAYERS, 2, 2, RUNC_MAX_VOCAB, 16};
        memcpy(p + 8, f, sizeof f);
    }
    add("overflowing products", p, v1->n, RUNC_E_OVERFLOW, "overflow");
    p = mutated(v0, v0->n);
    {
        int32_t f[7] = {RUNC_MAX_DIM, RUNC_MAX_HIDDEN_DIM, RUNC_MAX_LAYERS, 2, 2, -RUNC_MAX_VOCAB, 16};
        memcpy(p, f, sizeof f);
    }
    add("v0 overflowing products", p, v0->n, RUNC_E_OVERFLOW, "overflow");

    /* fields that are each fine but do not match the tensors */
    add_i32(v1, "vocab larger than the tensors", 28, 40, RUNC_E_TRUNCATED, "truncated");
    add_i32(v1, "max_seq_len irrelevant to v1 size", 32, 1000, RUNC_OK, "");
    add_i32(v0, "v0 max_seq_len changes the size", 24, 13, RUNC_E_TRUNCATED, "truncated");
    add_i32(v1, "n_layers smaller than the tensors", 16, 1, RUNC_E_TRAILING, "trailing");
    p = mutated(v1, v1->n);
    p[36] = 0;
    add("untied flag on a tied file", p, v1->n, RUNC_E_TRUNCATED, "truncated");
}

static void test_corrupt_models(void)
{
    spec s0 = {"v0", 0, 16, 36, 2, 4, 2, 20, 8, 1, 0, 0, 0, 0};
    spec s1 = {"v1", 1, 16, 36, 2, 4, 2, 20, 8, 1, 0, 1, 500.0f, 1e-3f};
    spec s2 = {"v2", 2, 32, 64, 1, 4, 2, 20, 8, 1, 16, 1, 10000.0f, 1e-5f};
    weights w0 = make_weights(s0), w1 = make_weights(s1), w2 = make_weights(s2);
    buf b0 = write_model(&w0), b1 = write_model(&w1), b2 = write_model(&w2);
    int i, seen_codes[32] = {0};
    size_t cut;

    build_corrupt_table(&b0, &b1, &b2);
    for (i = 0; i < n_table; i++) {
        corrupt *c = &table[i];
        runc_model *m = (runc_model *)&m; /* must be reset to NULL on failure */
        runc_config cfg;
        runc_error e1, e2;
        int r1 = runc_parse_header(c->data, c->size, &cfg, &e1);
        int r2 = runc_model_open_buffer(&m, c->data, c->size, 0, &e2);
        CHECK(r1 == c->code && e1.code == c->code, "corrupt '%s': parse_header gave %s (%s), expected %s", c->what,
              runc_status_name(r1), e1.message, runc_status_name(c->code));
        CHECK(r2 == c->code, "corrupt '%s': open_buffer gave %s (%s), expected %s", c->what, runc_status_name(r2),
              e2.message, runc_status_name(c->code));
        CHECK(strstr(e1.message, c->needle) != NULL, "corrupt '%s': message '%s' lacks '%s'", c->what, e1.message,
              c->needle);
        CHECK(strchr(e1.message, '\n') == NULL, "corrupt '%s': message is one line", c->what);
        CHECK((r2 == RUNC_OK) == (m != NULL), "corrupt '%s': model pointer set only on success", c->what);
        if (c->code >= 0 && c->code < 32) seen_codes[c->code]++;
        runc_model_close(r2 == RUNC_OK ? m : NULL);
        /* the same through a file, read and mmap'd */
        if (c->size > 0) {
            runc_model *fm = NULL;
            write_temp(c->data, c->size);
            r1 = runc_model_open(&fm, tmp_path, 0, &e1);
            runc_model_close(fm);
            fm = NULL;
            r2 = runc_model_open(&fm, tmp_path, RUNC_OPEN_NO_MMAP, &e2);
            runc_model_close(fm);
            remove(tmp_path);
            CHECK(r1 == c->code && r2 == c->code, "corrupt '%s' as a file: %s / %s, expected %s", c->what,
                  runc_status_name(r1), runc_status_name(r2), runc_status_name(c->code));
            CHECK(c->code == RUNC_OK || strstr(e1.message, tmp_path) != NULL,
                  "corrupt '%s' as a file: message names the path: %s", c->what, e1.message);
        }
        free(c->data);
    }
    /* every header error class is exercised */
    {
        int codes[] = {RUNC_E_EMPTY, RUNC_E_TRUNCATED, RUNC_E_TRAILING, RUNC_E_MAGIC, RUNC_E_VERSION,
                       RUNC_E_FIELD, RUNC_E_SHAPE, RUNC_E_GROUP, RUNC_E_FLAG, RUNC_E_EXTENSION, RUNC_E_OVERFLOW};
        for (i = 0; i < (int)(sizeof codes / sizeof codes[0]); i++)
            CHECK(seen_codes[codes[i]] > 0, "corrupt table covers %s", runc_status_name(codes[i]));
    }

    /* every truncation of every layout is rejected (ASan watches the reads) */
    {
        const buf *bases[3] = {&b0, &b1, &b2};
        int j, bad = 0;
        for (j = 0; j < 3; j++)
            for (cut = 0; cut < bases[j]->n; cut++) {
                unsigned char *p = dup_bytes(bases[j]->p, cut);
                runc_model *m = NULL;
                int rc = runc_model_open_buffer(&m, p, cut, 0, NULL);
                if (rc == RUNC_OK || m != NULL) bad++;
                runc_model_close(m);
                free(p);
            }
        CHECK(bad == 0, "every truncated file rejected (%d accepted)", bad);
    }
    /* random byte flips in the headers never crash and never leave a model
     * whose size disagrees with the file */
    {
        int trial, accepted = 0, bad = 0;
        for (trial = 0; trial < 3000; trial++) {
            const buf *base = trial % 3 == 0 ? &b0 : trial % 3 == 1 ? &b1 : &b2;
            unsigned char *p = dup_bytes(base->p, base->n);
            size_t hdr = base == &b0 ? 28 : 256;
            int flips = 1 + (int)(urand() * 3), f;
            runc_model *m = NULL;
            for (f = 0; f < flips; f++) p[(size_t)(urand() * hdr)] ^= (unsigned char)(1u << (int)(urand() * 8));
            if (runc_model_open_buffer(&m, p, base->n, 0, NULL) == RUNC_OK) {
                runc_state *st = NULL;
                const float *lg;
                accepted++;
                if (runc_model_config(m)->file_bytes != base->n) bad++;
                /* a still-valid file (e.g. a flipped norm_eps) must also run */
                if (runc_state_open(&st, m, 2, NULL) == RUNC_OK) {
                    if (runc_forward(st, 0, 0, &lg, NULL) != RUNC_OK) bad++;
                    runc_state_close(st);
                }
                runc_model_close(m);
            }
            free(p);
        }
        CHECK(bad == 0, "header fuzz: %d accepted, %d inconsistent", accepted, bad);
    }

    /* files that are not there, or not files */
    {
        runc_model *m = NULL;
        runc_error e;
        CHECK(runc_model_open(&m, "/nonexistent/model.bin", 0, &e) == RUNC_E_IO && m == NULL &&
                  strstr(e.message, "/nonexistent/model.bin") != NULL,
              "missing file: %s", e.message);
        CHECK(runc_model_open(&m, "/tmp", 0, &e) == RUNC_E_IO && m == NULL, "directory: %s", e.message);
        write_temp("", 0);
        CHECK(runc_model_open(&m, tmp_path, 0, &e) == RUNC_E_EMPTY, "empty file (mmap path): %s", e.message);
        CHECK(runc_model_open(&m, tmp_path, RUNC_OPEN_NO_MMAP, &e) == RUNC_E_EMPTY, "empty file (read path): %s",
              e.message);
        remove(tmp_path);
        CHECK(runc_model_open(&m, NULL, 0, &e) == RUNC_E_ARG, "NULL path");
        CHECK(runc_model_open(NULL, "x", 0, &e) == RUNC_E_ARG, "NULL out");
        CHECK(runc_model_open_buffer(&m, b1.p, b1.n, 64, &e) == RUNC_E_ARG, "unknown flags");
        CHECK(runc_model_open_buffer(&m, NULL, 10, 0, NULL) == RUNC_E_ARG, "NULL buffer, NULL err");
    }

    free(b0.p);
    free(b1.p);
    free(b2.p);
    free_weights(&w0);
    free_weights(&w1);
    free_weights(&w2);
}

/* ------------------------------------------------------------------------ */
/* tokenizer                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *piece;
    float score;
} vocab_entry;

/* A digits-style vocabulary without byte pieces (ids fixed for the tests). */
static const vocab_entry digits_vocab[] = {
    {"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {" ", -1},                           /* 0..3 */
    {"0", -1}, {"1", -1}, {"2", -1}, {"3", -1}, {"4", -1},                      /* 4..8 */
    {"5", -1}, {"6", -1}, {"7", -1}, {"8", -1}, {"9", -1},                      /* 9..13 */
    {"+", -1}, {"-", -1}, {"*", -1}, {"/", -1}, {"=", -1}, {".", -1},           /* 14..19 */
    {" =", -2}, {"00", -3}, {".0", -4}, {".00", -5}, {"000", -100},            /* 20..24 */
};
#define N_DIGITS ((int)(sizeof digits_vocab / sizeof digits_vocab[0]))

static buf write_tokenizer(const vocab_entry *v, int n, int with_bytes, int *vocab_size)
{
    buf b;
    int i, max_len = 0, total = 0;
    memset(&b, 0, sizeof b);
    for (i = 0; i < n; i++)
        if ((int)strlen(v[i].piece) > max_len) max_len = (int)strlen(v[i].piece);
    if (with_bytes && max_len < 6) max_len = 6;
    put_i32(&b, max_len);
    for (i = 0; i < n; i++) {
        if (with_bytes && i == 3) { /* SentencePiece puts the 256 byte pieces right after </s> */
            int byte;
            for (byte = 0; byte < 256; byte++) {
                char piece[8];
                snprintf(piece, sizeof piece, "<0x%02X>", byte);
                put_piece(&b, piece, 0.0f);
                total++;
            }
        }
        put_piece(&b, v[i].piece, v[i].score);
        total++;
    }
    *vocab_size = total;
    return b;
}

static int encode_is(const runc_tokenizer *t, const char *text, const int *want, int n_want)
{
    int got[64], n = 0;
    runc_error e;
    if (runc_encode(t, text, 1, 0, got, 64, &n, &e) != RUNC_OK) {
        printf("  encode('%s'): %s\n", text, e.message);
        return 0;
    }
    if (n != n_want || memcmp(got, want, (size_t)n * sizeof(int)) != 0) {
        int i;
        printf("  encode('%s') =", text);
        for (i = 0; i < n; i++) printf(" %d", got[i]);
        printf("\n");
        return 0;
    }
    return 1;
}

static void test_tokenizer(void)
{
    int V, Vb, rc;
    buf tb = write_tokenizer(digits_vocab, N_DIGITS, 0, &V);
    buf tbb = write_tokenizer(digits_vocab, N_DIGITS, 1, &Vb);
    runc_tokenizer *t = NULL, *tbyte = NULL, *tf = NULL;
    runc_error e;

    rc = runc_tokenizer_open_buffer(&t, tb.p, tb.n, V, &e);
    CHECK(rc == RUNC_OK, "digits tokenizer opens: %s", e.message);
    rc = runc_tokenizer_open_buffer(&tbyte, tbb.p, tbb.n, Vb, &e);
    CHECK(rc == RUNC_OK, "byte-fallback tokenizer opens: %s", e.message);
    if (!t || !tbyte) return;
    CHECK(runc_tokenizer_vocab_size(t) == N_DIGITS && runc_tokenizer_max_token_length(t) == 5, "vocab size, max len");
    write_temp(tb.p, tb.n);
    rc = runc_tokenizer_open(&tf, tmp_path, V, &e);
    remove(tmp_path);
    CHECK(rc == RUNC_OK, "tokenizer from a file: %s", e.message);
    runc_tokenizer_close(tf);
    rc = runc_tokenizer_open(&tf, "/nonexistent/tok.bin", V, &e);
    CHECK(rc == RUNC_E_IO && tf == NULL && strstr(e.message, "/nonexistent/tok.bin"), "missing tokenizer: %s",
          e.message);

    /* llama2.c's encoding: BOS, dummy prefix, code points, best-score merges */
    {
        int a[] = {1, 3, 6, 8, 3, 14, 3, 12, 6, 20};          /* " 24 + 82 =" with " =" merged */
        int b[] = {1, 3, 5, 23};                               /* "1.00": "00" then ".00" */
        int c[] = {1, 3, 24};                                  /* "000": "00" then "000" */
        int d[] = {1};                                         /* "": no dummy prefix */
        int f[] = {1, 3, 3, 20};                               /* "  =" */
        CHECK(encode_is(t, "24 + 82 =", a, 10), "encode '24 + 82 ='");
        CHECK(encode_is(t, "1.00", b, 4), "encode '1.00'");
        CHECK(encode_is(t, "000", c, 3), "encode '000'");
        CHECK(encode_is(t, "", d, 1), "encode ''");
        CHECK(encode_is(t, "  =", f, 4), "encode '  ='");
    }
    /* characters outside the vocabulary */
    {
        int ids[64], n = -1;
        rc = runc_encode(t, "2 + a", 1, 0, ids, 64, &n, &e);
        CHECK(rc == RUNC_E_ENCODE && strstr(e.message, "'a'") && n == 0, "unknown 'a': %s", e.message);
        rc = runc_encode(t, "\xc3\xa9", 1, 0, ids, 64, &n, &e);
        CHECK(rc == RUNC_E_ENCODE && strstr(e.message, "U+00E9"), "unknown e-acute: %s", e.message);
        rc = runc_encode(t, "1\t2", 1, 0, ids, 64, &n, &e);
        CHECK(rc == RUNC_E_ENCODE && strstr(e.message, "U+0009"), "unknown tab: %s", e.message);
        rc = runc_encode(t, "\xff", 1, 0, ids, 64, &n, &e);
        CHECK(rc == RUNC_E_ENCODE && strstr(e.message, "0xFF"), "invalid UTF-8: %s", e.message);
        rc = runc_encode(t, "12345", 1, 1, ids, 4, &n, &e);
        CHECK(rc == RUNC_E_BUFFER, "small token buffer");
        rc = runc_encode(t, "12", 1, 1, ids, 64, &n, &e);
        CHECK(rc == RUNC_OK && n == 5 && ids[4] == 2, "EOS appended");
    }
    /* byte fallback, and round trips */
    {
        const char *texts[] = {"24 + 82 = 106.00", "", "0", "99 * 99 = 9801.00", "1.00 - 000",
                               "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80", "\xff\xfe stray",
                               "\x80\x80\x80\x80\x80"};
        int k;
        for (k = 0; k < (int)(sizeof texts / sizeof texts[0]); k++) {
            int ids[128], n;
            char out[512];
            size_t len;
            rc = runc_encode(tbyte, texts[k], 1, 0, ids, 128, &n, &e);
            CHECK(rc == RUNC_OK, "byte-fallback encode '%s': %s", texts[k], e.message);
            if (rc != RUNC_OK) continue;
            rc = runc_decode(tbyte, ids[0], ids + 1, n - 1, out, sizeof out, &len, &e);
            CHECK(rc == RUNC_OK && len == strlen(texts[k]) && strcmp(out, texts[k]) == 0,
                  "round trip '%s' -> '%s'", texts[k], out);
            if (k < 5) { /* in-vocabulary texts: the two tokenizers agree (ids shifted by 256) */
                int ids2[128], n2, i, same;
                rc = runc_encode(t, texts[k], 1, 0, ids2, 128, &n2, &e);
                same = rc == RUNC_OK && n2 == n;
                for (i = 0; same && i < n; i++) same = ids2[i] == (ids[i] >= 259 ? ids[i] - 256 : ids[i]);
                CHECK(same, "digits and byte tokenizers agree on '%s'", texts[k]);
            }
        }
    }
    /* decode details */
    {
        const char *p;
        size_t len;
        int ids[3] = {3 + 256 + 3, 20 + 256, 2}; /* "2", " =", EOS */
        char out[16];
        CHECK(runc_decode_piece(tbyte, 5, 3 + 0x41, &p, &len) == RUNC_OK && len == 1 && p[0] == 'A',
              "byte piece <0x41> decodes to 'A'");
        CHECK(runc_decode_piece(t, 1, 20, &p, &len) == RUNC_OK && len == 1 && p[0] == '=',
              "leading space dropped after BOS");
        CHECK(runc_decode_piece(t, 5, 20, &p, &len) == RUNC_OK && len == 2, "leading space kept elsewhere");
        CHECK(runc_decode_piece(t, 5, 2, &p, &len) == RUNC_OK && len == 0, "EOS decodes to nothing");
        CHECK(runc_decode_piece(t, 5, V, &p, &len) == RUNC_E_ARG, "token out of range");
        CHECK(runc_decode(tbyte, 7, ids, 3, out, sizeof out, &len, &e) == RUNC_OK && strcmp(out, "2 =") == 0,
              "decode run: '%s'", out);
        CHECK(runc_decode(tbyte, 7, ids, 3, out, 3, &len, &e) == RUNC_E_BUFFER && len == 3, "decode buffer too small");
        CHECK(runc_token_piece(t, 23, &len) && len == 3 && runc_token_score(t, 23) == -5.0f, "piece and score");
        CHECK(runc_token_piece(t, -1, &len) == NULL && len == 0, "piece out of range");
    }

    /* corruptions */
    {
        struct {
            const char *what;
            size_t size;
            size_t off;       /* where to write `val` (or SIZE_MAX: nothing) */
            int32_t val;
            int vocab;
            int code;
            const char *needle;
        } cases[] = {
            {"empty", 0, SIZE_MAX, 0, 0, RUNC_E_EMPTY, "empty"},
            {"2 bytes", 2, SIZE_MAX, 0, 0, RUNC_E_TRUNCATED, "truncated"},
            {"max_token_length 0", 0, 0, 0, 0, RUNC_E_TOKENIZER, "max_token_length"},
            {"max_token_length -5", 0, 0, -5, 0, RUNC_E_TOKENIZER, "max_token_length"},
            {"max_token_length huge", 0, 0, INT32_MAX, 0, RUNC_E_TOKENIZER, "max_token_length"},
            {"negative length", 0, 4 + 4, -1, 0, RUNC_E_TOKENIZER, "negative"},
            {"length above max", 0, 4 + 4, 6, 0, RUNC_E_TOKENIZER, "max_token_length"},
            {"huge length", 0, 4 + 4, INT32_MAX, 0, RUNC_E_TOKENIZER, "max_token_length"},
            {"NaN score", 0, 4, 0x7fc00000, 0, RUNC_E_TOKENIZER, "NaN"},
            {"model vocab smaller (trailing)", 0, SIZE_MAX, 0, -1, RUNC_E_VOCAB, "tokenizer of another model"},
            {"model vocab larger", 0, SIZE_MAX, 0, +1, RUNC_E_TRUNCATED, "truncated"},
            {"cut in a score", 6, SIZE_MAX, 0, 0, RUNC_E_TRUNCATED, "truncated"},
            {"cut in a piece", 4 + 8 + 2, SIZE_MAX, 0, 0, RUNC_E_TRUNCATED, "inside token 0"},
        };
        int k;
        size_t cut;
        for (k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
            size_t size = cases[k].size ? cases[k].size : (k == 0 ? 0 : tb.n);
            unsigned char *p = dup_bytes(tb.p, size);
            runc_tokenizer *x = (runc_tokenizer *)&x;
            if (cases[k].off != SIZE_MAX) memcpy(p + cases[k].off, &cases[k].val, 4);
            rc = runc_tokenizer_open_buffer(&x, p, size, V + cases[k].vocab, &e);
            CHECK(rc == cases[k].code && x == NULL && strstr(e.message, cases[k].needle),
                  "tokenizer '%s': %s (%s), expected %s", cases[k].what, runc_status_name(rc), e.message,
                  runc_status_name(cases[k].code));
            free(p);
        }
        for (cut = 0; cut < tbb.n; cut++) {
            unsigned char *p = dup_bytes(tbb.p, cut);
            runc_tokenizer *x = NULL;
            rc = runc_tokenizer_open_buffer(&x, p, cut, Vb, NULL);
            if (rc == RUNC_OK) break;
            free(p);
        }
        CHECK(cut == tbb.n, "every truncated tokenizer rejected (accepted at %zu)", cut);
        CHECK(runc_tokenizer_open_buffer(&tf, tb.p, tb.n, 0, &e) == RUNC_E_ARG, "vocab size 0");
    }
    runc_tokenizer_close(t);
    runc_tokenizer_close(tbyte);
    free(tb.p);
    free(tbb.p);
}

/* ------------------------------------------------------------------------ */
/* sampler, generation, the problem convention                               */
/* ------------------------------------------------------------------------ */

/* counts[id] = how many of n samples from s over logits (vocab ids) came out as id */
static void count_samples(runc_sampler *s, const float *logits, int n, int *counts, int vocab)
{
    int i, tok;
    memset(counts, 0, (size_t)vocab * sizeof *counts);
    for (i = 0; i < n; i++) {
        runc_sample(s, logits, &tok, NULL);
        counts[tok]++;
    }
}

static void test_sampler(void)
{
    float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.0f};
    runc_sampler *s = NULL, *s2 = NULL;
    runc_error e;
    int tok, i, counts[6], seq1[50], seq2[50];
    float lp;
    double z = 0;

    CHECK(runc_sampler_open(&s, 6, 0.0f, 0.9f, 1, &e) == RUNC_OK, "greedy sampler");
    runc_sample(s, logits, &tok, &lp);
    for (i = 0; i < 6; i++) z += exp(logits[i]);
    CHECK(tok == 1, "greedy: first of equal maxima (got %d)", tok);
    CHECK(fabs(lp - (2.0 - log(z))) < 1e-5, "log-probability %g vs %g", (double)lp, 2.0 - log(z));
    runc_sampler_close(s);

    /* same seed, same samples; different seed, different samples */
    runc_sampler_open(&s, 6, 1.0f, 0.0f, 42, &e);
    runc_sampler_open(&s2, 6, 1.0f, 0.0f, 42, &e);
    for (i = 0; i < 50; i++) {
        runc_sample(s, logits, &seq1[i], NULL);
        runc_sample(s2, logits, &seq2[i], NULL);
    }
    CHECK(memcmp(seq1, seq2, sizeof seq1) == 0, "seeded sampling is reproducible");
    runc_sampler_close(s2);
    runc_sampler_open(&s2, 6, 1.0f, 0.0f, 43, &e);
    for (i = 0; i < 50; i++) runc_sample(s2, logits, &seq2[i], NULL);
    CHECK(memcmp(seq1, seq2, sizeof seq1) != 0, "another seed, other samples");
    runc_sampler_close(s2);

    /* plain sampling follows softmax(logits) */
    count_samples(s, logits, 20000, counts, 6);
    {
        int ok = 1;
        for (i = 0; i < 6; i++) {
            double p = exp(logits[i]) / z, f = counts[i] / 20000.0;
            if (fabs(p - f) > 0.015) ok = 0;
        }
        CHECK(ok, "sampling frequencies follow the softmax");
    }
    runc_sampler_close(s);

    /* top-p: probs of {1,3} ~ 0.33 each, {4} ~ 0.12: topp 0.6 keeps only 1 and 3 */
    runc_sampler_open(&s, 6, 1.0f, 0.6f, 7, &e);
    count_samples(s, logits, 5000, counts, 6);
    CHECK(counts[1] + counts[3] == 5000 && counts[1] > 2000 && counts[3] > 2000, "top-p keeps the nucleus {1, 3}");
    runc_sampler_close(s);
    /* a tiny top-p keeps the most likely token (llama2.c's cutoff would keep none here) */
    {
        float two[2] = {0.1f, 0.0f};
        runc_sampler_open(&s, 2, 1.0f, 0.05f, 3, &e);
        count_samples(s, two, 200, counts, 2);
        CHECK(counts[0] == 200, "top-p 0.05 of two tokens keeps the likelier (%d, %d)", counts[0], counts[1]);
        runc_sampler_close(s);
    }
    /* NaN logits: a token in range, no crash */
    {
        float nan3[3];
        nan3[0] = nan3[1] = nan3[2] = (float)NAN;
        runc_sampler_open(&s, 3, 1.0f, 0.5f, 3, &e);
        tok = -1;
        runc_sample(s, nan3, &tok, NULL);
        CHECK(tok >= 0 && tok < 3, "NaN logits still give a token id in range");
        runc_sampler_close(s);
        runc_sampler_open(&s, 3, 1.0f, 0.0f, 3, &e);
        tok = -1;
        runc_sample(s, nan3, &tok, NULL);
        CHECK(tok >= 0 && tok < 3, "NaN logits (no top-p) still give a token id in range");
        runc_sampler_close(s);
    }
    /* low temperature concentrates on the maxima */
    runc_sampler_open(&s, 6, 0.05f, 0.0f, 9, &e);
    count_samples(s, logits, 2000, counts, 6);
    CHECK(counts[1] + counts[3] == 2000, "low temperature picks the maxima");
    runc_sampler_close(s);

    CHECK(runc_sampler_open(&s, 6, -1.0f, 0.9f, 1, &e) == RUNC_E_ARG && s == NULL, "negative temperature");
    CHECK(runc_sampler_open(&s, 6, (float)NAN, 0.9f, 1, &e) == RUNC_E_ARG, "NaN temperature");
    CHECK(runc_sampler_open(&s, 6, 1.0f, 1.5f, 1, &e) == RUNC_E_ARG, "top-p above 1");
    CHECK(runc_sampler_open(&s, 0, 1.0f, 0.5f, 1, &e) == RUNC_E_ARG, "vocab 0");
}

/* A small model to generate with (the digits tokenizer, 2 layers, GQA 4/2,
 * context 16), a state on it and a greedy sampler. */
typedef struct {
    spec sp;
    buf tb, mb;
    weights w;
    runc_model *m;
    runc_tokenizer *t;
    runc_state *st;
    runc_sampler *greedy;
    int V;
} gen_setup;

static int gen_open(gen_setup *g, const char *name)
{
    const spec sp = {name, 1, 16, 40, 2, 4, 2, 25, 16, 1, 0, 0, 0, 0};
    runc_error e;
    memset(g, 0, sizeof *g);
    g->sp = sp;
    g->tb = write_tokenizer(digits_vocab, N_DIGITS, 0, &g->V);
    g->sp.vocab = g->V;
    g->w = make_weights(g->sp);
    g->mb = write_model(&g->w);
    CHECK(runc_model_open_buffer(&g->m, g->mb.p, g->mb.n, 0, &e) == RUNC_OK, "%s model: %s", name, e.message);
    runc_tokenizer_open_buffer(&g->t, g->tb.p, g->tb.n, g->V, &e);
    runc_state_open(&g->st, g->m, 0, &e);
    runc_sampler_open(&g->greedy, g->V, 0.0f, 0.0f, 1, &e);
    return g->m && g->t && g->st && g->greedy;
}

static void gen_close(gen_setup *g)
{
    runc_sampler_close(g->greedy);
    runc_state_close(g->st);
    runc_tokenizer_close(g->t);
    runc_model_close(g->m);
    free(g->mb.p);
    free(g->tb.p);
    free_weights(&g->w);
}

static void test_generation(void)
{
    gen_setup g;
    const int ok = gen_open(&g, "gen");
    runc_model *m = g.m;
    runc_tokenizer *t = g.t;
    runc_state *st = g.st, *small = NULL;
    runc_sampler *greedy = g.greedy;
    const int V = g.V;
    const spec sp = g.sp;
    runc_error e;
    int rc, prompt[32], n_prompt, out[32], n_out, gen, i;
    float lps[32];
    char answer[512], expect[512];
    size_t len;

    if (!ok) {
        gen_close(&g);
        return;
    }

    /* solve = encode + greedy generate + decode + strip */
    rc = runc_encode(t, "24 + 82 =", 1, 0, prompt, 32, &n_prompt, &e);
    rc = runc_generate(st, greedy, prompt, n_prompt, 32, RUNC_TOKEN_EOS, out, lps, &n_out, &e);
    CHECK(rc == RUNC_OK, "generate: %s", e.message);
    CHECK(n_prompt + n_out <= sp.seq, "generation stays in the context");
    runc_decode(t, prompt[n_prompt - 1], out, n_out, expect, sizeof expect, &len, &e);
    {
        size_t a = 0, b = len;
        while (a < b && expect[a] == ' ') a++;
        while (b > a && expect[b - 1] == ' ') b--;
        memmove(expect, expect + a, b - a);
        expect[b - a] = '\0';
    }
    rc = runc_solve(st, t, "24 + 82 =", answer, runc_answer_cap(st, t), &gen, &e);
    CHECK(rc == RUNC_OK && gen == n_out && strcmp(answer, expect) == 0, "solve '%s' == generate '%s' (%s)", answer,
          expect, e.message);
    /* logprobs are those of the logits at each step */
    {
        const float *lg;
        int ok = 1;
        for (i = 0; i < n_prompt; i++) runc_forward(st, prompt[i], i, &lg, &e);
        for (i = 0; i < n_out; i++) {
            double z = 0, mx = lg[0];
            int j, best = 0;
            for (j = 0; j < V; j++) {
                if (lg[j] > mx) mx = lg[j];
                if (lg[j] > lg[best]) best = j;
            }
            for (j = 0; j < V; j++) z += exp(lg[j] - mx);
            if (best != out[i] || fabs(lps[i] - (lg[best] - mx - log(z))) > 1e-4) ok = 0;
            if (i + 1 < n_out) runc_forward(st, out[i], n_prompt + i, &lg, &e);
        }
        CHECK(ok, "greedy tokens are the argmax, logprobs the log-softmax");
    }
    /* max_new limits, stop tokens stop */
    rc = runc_generate(st, greedy, prompt, n_prompt, 2, -1, out, NULL, &n_out, &e);
    CHECK(rc == RUNC_OK && n_out == 2, "max_new = 2 gives 2 tokens");
    rc = runc_generate(st, greedy, prompt, n_prompt, 0, -1, out, NULL, &n_out, &e);
    CHECK(rc == RUNC_OK && n_out == 0, "max_new = 0");
    {
        int first = out[0];
        rc = runc_generate(st, greedy, prompt, n_prompt, 5, -1, out, NULL, &n_out, &e);
        first = out[0];
        rc = runc_generate(st, greedy, prompt, n_prompt, 5, first, out, NULL, &n_out, &e);
        CHECK(rc == RUNC_OK && n_out == 0, "stop token not emitted");
    }
    rc = runc_generate(st, greedy, prompt, n_prompt, 100, -1, out, NULL, &n_out, &e);
    CHECK(rc == RUNC_OK && n_prompt + n_out == sp.seq, "no stop: generation runs to the end of the context");

    /* context limits */
    runc_state_open(&small, m, 6, &e);
    rc = runc_solve(small, t, "24 + 82 =", answer, sizeof answer, NULL, &e);
    CHECK(rc == RUNC_E_CONTEXT && strstr(e.message, "context"), "prompt longer than the context: %s", e.message);
    rc = runc_solve(small, t, "1", answer, sizeof answer, &gen, &e);
    CHECK(rc == RUNC_OK && gen <= 3, "short prompt in a small context (%d generated)", gen);
    rc = runc_forward(small, 0, 6, NULL, &e);
    CHECK(rc == RUNC_E_CONTEXT, "position past the context");
    rc = runc_forward(small, V, 0, NULL, &e);
    CHECK(rc == RUNC_E_ARG, "token past the vocabulary");
    rc = runc_forward(small, -1, 0, NULL, &e);
    CHECK(rc == RUNC_E_ARG, "negative token");
    runc_state_close(small);
    CHECK(runc_state_open(&small, m, sp.seq + 1, &e) == RUNC_E_ARG && small == NULL, "context above max_seq_len");
    rc = runc_solve(st, t, "2 + b", answer, sizeof answer, NULL, &e);
    CHECK(rc == RUNC_E_ENCODE && strstr(e.message, "'b'"), "solve: character outside the vocabulary: %s",
          e.message);
    rc = runc_solve(st, t, "1 + 1 =", answer, 1, NULL, &e);
    CHECK(rc == RUNC_OK || rc == RUNC_E_BUFFER, "solve with a 1-byte buffer does not overflow");
    rc = runc_generate(st, greedy, prompt, 0, 5, -1, out, NULL, &n_out, &e);
    CHECK(rc == RUNC_E_CONTEXT, "empty prompt ids");
    {
        int bad[2] = {1, 999};
        rc = runc_generate(st, greedy, bad, 2, 5, -1, out, NULL, &n_out, &e);
        CHECK(rc == RUNC_E_ARG, "prompt token out of range");
    }
    {
        runc_tokenizer *t2 = NULL;
        int V2;
        buf tb2 = write_tokenizer(digits_vocab, N_DIGITS - 1, 0, &V2);
        runc_tokenizer_open_buffer(&t2, tb2.p, tb2.n, V2, &e);
        rc = runc_solve(st, t2, "1 =", answer, sizeof answer, NULL, &e);
        CHECK(rc == RUNC_E_VOCAB, "tokenizer of another vocabulary size: %s", e.message);
        runc_tokenizer_close(t2);
        free(tb2.p);
    }
    /* an independent state on the same model gives the same answer (no shared state) */
    {
        runc_state *other = NULL;
        char a2[512];
        runc_state_open(&other, m, 0, &e);
        runc_solve(st, t, "7 * 8 =", answer, sizeof answer, NULL, &e);
        runc_solve(other, t, "3 - 1 =", a2, sizeof a2, NULL, &e);
        runc_solve(other, t, "7 * 8 =", a2, sizeof a2, NULL, &e);
        CHECK(strcmp(answer, a2) == 0, "states are independent");
        runc_state_close(other);
    }
    CHECK(strcmp(runc_status_name(RUNC_E_MAGIC), "RUNC_E_MAGIC") == 0 && strcmp(runc_status_name(999), "RUNC_E_UNKNOWN") == 0,
          "status names");
    runc_state_close(small);
    gen_close(&g);
}

/* Greedy generation of prompt on state st: tokens out, log-probabilities lps,
 * and the tokens the state ran for it. */
static int generate_counted(runc_state *st, runc_sampler *greedy, const runc_tokenizer *t, const char *text, int *out,
                            float *lps, long long *ran)
{
    runc_error e;
    int prompt[32], n_prompt = 0, n_out = -1;
    long long before = runc_state_tokens(st);
    if (runc_encode(t, text, 1, 0, prompt, 32, &n_prompt, &e) != RUNC_OK ||
        runc_generate(st, greedy, prompt, n_prompt, 32, RUNC_TOKEN_EOS, out, lps, &n_out, &e) != RUNC_OK) {
        CHECK(0, "reuse: '%s': %s", text, e.message);
        return -1;
    }
    *ran = runc_state_tokens(st) - before;
    return n_out;
}

/* A state reuses the cached positions of the prompt it ran last, where the
 * new prompt begins the same way: the same tokens and log-probabilities, bit
 * for bit, as a fresh state's, with those positions not run again. */
static void test_prefix_reuse(void)
{
    static const char *const prompts[] = {"24 + 82 =", "24 + 89 =", "24 + 89 =", "24 - 82 =", "7 =",
                                          "24 + 82 =", "24 + 82 = 1", "9 * 9 =", "9 * 9 = 8"};
    int prompt[32], n_prompt, out[32], want[32], n, n_want, i, same;
    float lps[32], want_lps[32];
    long long ran, ran_fresh;
    gen_setup g;
    runc_model *m;
    runc_tokenizer *t;
    runc_state *st, *fresh = NULL;
    runc_sampler *greedy;
    runc_error e;

    if (gen_open(&g, "reuse")) {
        m = g.m, t = g.t, st = g.st, greedy = g.greedy;
        for (i = 0; i < (int)(sizeof prompts / sizeof prompts[0]); i++) {
            int shared = 0, prev[32], n_prev = 0;
            runc_state_open(&fresh, m, 0, &e);
            n_want = fresh ? generate_counted(fresh, greedy, t, prompts[i], want, want_lps, &ran_fresh) : -1;
            runc_state_close(fresh);
            fresh = NULL;
            n = generate_counted(st, greedy, t, prompts[i], out, lps, &ran);
            same = n == n_want && n >= 0 && memcmp(out, want, (size_t)n * sizeof *out) == 0 &&
                   memcmp(lps, want_lps, (size_t)n * sizeof *lps) == 0;
            CHECK(same, "reuse: '%s' after '%s' differs from a fresh state's", prompts[i], i ? prompts[i - 1] : "");
            if (i == 0) continue;
            /* the positions reused: the prompt's first tokens (not its last)
             * shared with the previous prompt; where they run on past it, into
             * its answer, the count depends on that answer: not checked */
            runc_encode(t, prompts[i], 1, 0, prompt, 32, &n_prompt, &e);
            runc_encode(t, prompts[i - 1], 1, 0, prev, 32, &n_prev, &e);
            while (shared < n_prompt - 1 && shared < n_prev && prompt[shared] == prev[shared]) shared++;
            if (shared < n_prev || shared == n_prompt - 1)
                CHECK(ran == ran_fresh - shared, "reuse: '%s' after '%s' ran %lld tokens, a fresh state %lld, %d shared",
                      prompts[i], prompts[i - 1], ran, ran_fresh, shared);
        }
        /* a position run again out of turn ends what the cache holds there:
         * the prompt reuses positions 0..2 only */
        runc_state_open(&fresh, m, 0, &e);
        n_want = fresh ? generate_counted(fresh, greedy, t, "24 + 82 =", want, want_lps, &ran_fresh) : -1;
        runc_state_close(fresh);
        generate_counted(st, greedy, t, "24 + 82 =", out, lps, &ran);
        runc_encode(t, "24 + 82 =", 1, 0, prompt, 32, &n_prompt, &e);
        runc_forward(st, prompt[3] == 5 ? 6 : 5, 3, NULL, &e);
        n = generate_counted(st, greedy, t, "24 + 82 =", out, lps, &ran);
        CHECK(n == n_want && n >= 0 && memcmp(out, want, (size_t)n * sizeof *out) == 0 && ran == ran_fresh - 3,
              "reuse after runc_forward at position 3: %lld tokens run, a fresh state %lld", ran, ran_fresh);
    }
    gen_close(&g);
}

/* ------------------------------------------------------------------------ */
/* hardening: non-finite weights, bad tokenizer pieces, NULL arguments       */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *what;
    size_t off;         /* byte offset of the float to overwrite */
    float val;
    int code;
    const char *needle; /* in the message */
} weight_case;

static void run_weight_cases(const buf *base, const weight_case *cases, int n, const char *label)
{
    int k;
    for (k = 0; k < n; k++) {
        const weight_case *c = &cases[k];
        unsigned char *p = dup_bytes(base->p, base->n);
        runc_model *m = (runc_model *)&m;
        runc_error e;
        int rc, r1, r2;
        memcpy(p + c->off, &c->val, 4);
        rc = runc_model_open_buffer(&m, p, base->n, 0, &e);
        CHECK(rc == c->code && (rc == RUNC_OK) == (m != NULL), "%s weights '%s': %s (%s), expected %s", label,
              c->what, runc_status_name(rc), e.message, runc_status_name(c->code));
        CHECK(strstr(e.message, c->needle) != NULL, "%s weights '%s': message '%s' lacks '%s'", label, c->what,
              e.message, c->needle);
        if (rc == RUNC_OK) {
            runc_state *st = NULL;
            const float *lg;
            runc_state_open(&st, m, 0, &e);
            CHECK(st && runc_forward(st, 1, 0, &lg, &e) == RUNC_OK, "%s weights '%s' run", label, c->what);
            runc_state_close(st);
            runc_model_close(m);
        }
        /* the same through the file paths (mmap'd and read) */
        {
            runc_model *fm = NULL;
            runc_error e1, e2;
            write_temp(p, base->n);
            r1 = runc_model_open(&fm, tmp_path, 0, &e1);
            runc_model_close(fm);
            fm = NULL;
            r2 = runc_model_open(&fm, tmp_path, RUNC_OPEN_NO_MMAP, &e2);
            runc_model_close(fm);
            remove(tmp_path);
            CHECK(r1 == c->code && r2 == c->code && (c->code == RUNC_OK || strstr(e1.message, tmp_path)),
                  "%s weights '%s' as a file: %s / %s (%s)", label, c->what, runc_status_name(r1),
                  runc_status_name(r2), e1.message);
        }
        /* unchecked: loads, and runs without a crash; samplers give ids in range */
        if (c->code != RUNC_OK) {
            runc_model *um = NULL;
            runc_state *st = NULL;
            runc_sampler *greedy = NULL, *hot = NULL;
            int prompt[2] = {1, 3}, out[8], n_out = -1, n_out2 = -1, i, in_range = 1;
            rc = runc_model_open_buffer(&um, p, base->n, RUNC_OPEN_NO_WEIGHT_CHECK, &e);
            CHECK(rc == RUNC_OK, "%s weights '%s' unchecked: %s", label, c->what, e.message);
            if (rc == RUNC_OK) {
                int V = runc_model_config(um)->vocab_size;
                runc_state_open(&st, um, 0, &e);
                runc_sampler_open(&greedy, V, 0.0f, 0.0f, 1, &e);
                runc_sampler_open(&hot, V, 1.0f, 0.9f, 7, &e);
                rc = runc_generate(st, greedy, prompt, 2, 5, -1, out, NULL, &n_out, &e);
                for (i = 0; i < n_out; i++) in_range &= out[i] >= 0 && out[i] < V;
                r1 = runc_generate(st, hot, prompt, 2, 5, -1, out, NULL, &n_out2, &e);
                for (i = 0; i < n_out2; i++) in_range &= out[i] >= 0 && out[i] < V;
                CHECK(rc == RUNC_OK && r1 == RUNC_OK && n_out == 5 && n_out2 == 5 && in_range,
                      "%s weights '%s' unchecked: generation gives ids in range", label, c->what);
                runc_sampler_close(greedy);
                runc_sampler_close(hot);
                runc_state_close(st);
                runc_model_close(um);
            }
        }
        free(p);
    }
}

static void test_corrupt_weights(void)
{
    /* v1, untied: dim 16, hidden 36, 2 layers, kv_dim 8, vocab 20 */
    spec s1 = {"w1", 1, 16, 36, 2, 4, 2, 20, 8, 0, 0, 0, 0, 0};
    /* v2, untied: dim 32, hidden 64, 1 layer, kv_dim 16, vocab 20, group 16 */
    spec s2 = {"w2", 2, 32, 64, 1, 4, 2, 20, 8, 0, 16, 0, 0, 0};
    /* v0, tied: dim 16, hidden 36, 2 layers, seq 8 */
    spec s0 = {"w0", 0, 16, 36, 2, 4, 2, 20, 8, 1, 0, 0, 0, 0};
    weights w1 = make_weights(s1), w2 = make_weights(s2), w0 = make_weights(s0);
    buf b1 = write_model(&w1), b2 = write_model(&w2), b0 = write_model(&w0);
    const float nan = (float)NAN, inf = (float)INFINITY;
    size_t D = 16, H = 36, L = 2, KV = 8, V = 20, f = 4;
    /* v1 offsets: norms, tok, wq, wk, wv, wo, w1, w2, w3, cls */
    size_t att = 256, ffn = att + L * D * f, fin = ffn + L * D * f, tok = fin + D * f;
    size_t wq = tok + V * D * f, wk = wq + L * D * D * f, wv = wk + L * KV * D * f, wo = wv + L * KV * D * f;
    size_t w1o = wo + L * D * D * f, w2o = w1o + L * H * D * f, w3o = w2o + L * D * H * f, cls = w3o + L * H * D * f;
    weight_case v1[] = {
        {"NaN in rms_att of layer 1", att + (D + 3) * f, nan, RUNC_E_WEIGHT, "rms_att (layer 1) weight has a NaN"},
        {"inf in rms_ffn", ffn + 2 * f, inf, RUNC_E_WEIGHT, "rms_ffn (layer 0) weight has a infinite"},
        {"-inf in rms_final", fin + 15 * f, -inf, RUNC_E_WEIGHT, "rms_final weight has a infinite value at index 15"},
        {"NaN in the embedding", tok + 77 * f, nan, RUNC_E_WEIGHT, "token embedding weight has a NaN value at index 77"},
        {"NaN in wk of layer 1", wk + (KV * D + 5) * f, nan, RUNC_E_WEIGHT, "wk (layer 1)"},
        {"inf in wo", wo + 1 * f, inf, RUNC_E_WEIGHT, "wo (layer 0)"},
        {"NaN in w2 of layer 1", w2o + (D * H + 1) * f, nan, RUNC_E_WEIGHT, "w2 (layer 1)"},
        {"inf in w3", w3o, -inf, RUNC_E_WEIGHT, "w3 (layer 0)"},
        {"NaN in the classifier's last value", b1.n - 4, nan, RUNC_E_WEIGHT, "classifier weight has a NaN"},
        {"huge but finite weight", wq + 4 * f, 3.0e38f, RUNC_OK, ""},
        {"signalling NaN", cls + 8, 0.0f, RUNC_OK, ""}, /* replaced below */
    };
    /* v2 offsets: fp32 norms, then per matrix int8 values then fp32 scales */
    size_t D2 = 32, H2 = 64, KV2 = 16, G = 16;
    size_t n2 = 256 + 3 * D2 * f;
    size_t tq = n2, ts = tq + V * D2, q_q = ts + V * D2 / G * f, q_s = q_q + D2 * D2;
    size_t k_q = q_s + D2 * D2 / G * f, k_s = k_q + KV2 * D2, v_q = k_s + KV2 * D2 / G * f, v_s = v_q + KV2 * D2;
    size_t o_q = v_s + KV2 * D2 / G * f, o_s = o_q + D2 * D2, a_q = o_s + D2 * D2 / G * f, a_s = a_q + H2 * D2;
    weight_case v2[] = {
        {"NaN norm", 256 + D2 * f, nan, RUNC_E_WEIGHT, "rms_ffn (layer 0) weight has a NaN"},
        {"NaN scale in the embedding", ts + 3 * f, nan, RUNC_E_WEIGHT, "token embedding Q8_0 scale has a NaN value at index 3"},
        {"inf scale in wq", q_s, inf, RUNC_E_WEIGHT, "wq (layer 0) Q8_0 scale has a infinite"},
        {"negative scale in wv", v_s + f, -0.5f, RUNC_E_WEIGHT, "wv (layer 0) Q8_0 scale 1 is negative"},
        {"negative scale in the classifier", b2.n - 4, -1e-3f, RUNC_E_WEIGHT, "classifier Q8_0 scale"},
        {"zero scale (an all-zero group)", a_s + 2 * f, 0.0f, RUNC_OK, ""},
        {"negative zero scale", o_s, -0.0f, RUNC_OK, ""},
        {"huge scale", k_s, 1e30f, RUNC_OK, ""},
    };
    /* v0 (tied): tok first, then rms_att ...; the stored RoPE tables are never read */
    size_t rope0 = 28 + (V * D + L * D + L * D * D * 2 + L * KV * D * 2 + L * D + L * H * D * 3 + D) * f;
    weight_case v0[] = {
        {"v0 NaN in the embedding", 28 + 5 * f, nan, RUNC_E_WEIGHT, "token embedding weight has a NaN value at index 5"},
        {"v0 inf in rms_final", rope0 - f, inf, RUNC_E_WEIGHT, "rms_final weight has a infinite value at index 15"},
        {"v0 NaN in the unused RoPE table", rope0 + 3 * f, nan, RUNC_OK, ""},
    };
    {
        uint32_t snan = 0x7F800001u; /* a signalling NaN bit pattern */
        memcpy(&v1[10].val, &snan, 4);
        v1[10].code = RUNC_E_WEIGHT;
        v1[10].needle = "classifier weight has a NaN value at index 2";
    }
    CHECK(b1.n == cls + V * D * f && b2.n == a_s + H2 * D2 / G * f + 2 * (H2 * D2 + H2 * D2 / G * f) +
                                                 (V * D2 + V * D2 / G * f),
          "weight offsets match the layouts (%zu, %zu)", b1.n, b2.n);
    (void)k_q;
    (void)a_q;
    run_weight_cases(&b1, v1, (int)(sizeof v1 / sizeof v1[0]), "v1");
    run_weight_cases(&b2, v2, (int)(sizeof v2 / sizeof v2[0]), "v2");
    run_weight_cases(&b0, v0, (int)(sizeof v0 / sizeof v0[0]), "v0");
    {
        runc_model *m = NULL;
        CHECK(runc_model_open_buffer(&m, b1.p, b1.n, 8, NULL) == RUNC_E_ARG && m == NULL, "unknown flag 8");
    }
    free(b0.p);
    free(b1.p);
    free(b2.p);
    free_weights(&w0);
    free_weights(&w1);
    free_weights(&w2);
}

/* Tokenizers whose pieces are empty, repeated or not UTF-8. */
static void test_tokenizer_pieces(void)
{
    struct {
        const char *what;
        const char *piece; /* replaces digits_vocab[5] ("1") */
        int bytes;         /* with the 256 byte pieces */
        int code;
        const char *needle;
    } cases[] = {
        {"empty piece", "", 0, RUNC_E_TOKENIZER, "token 5 is an empty piece"},
        {"duplicate piece", "7", 0, RUNC_E_TOKENIZER, "tokens 5 and 11 are the same piece \"7\""},
        {"duplicate of the space", " ", 0, RUNC_E_TOKENIZER, "tokens 3 and 5 are the same piece \" \""},
        {"duplicate of a byte piece", "<0x41>", 1, RUNC_E_TOKENIZER, "the same piece \"<0x41>\""},
        {"duplicate of a control piece", "</s>", 0, RUNC_E_TOKENIZER, "tokens 2 and 5"},
        {"stray continuation byte", "\x80", 0, RUNC_E_TOKENIZER, "token 5 is not valid UTF-8 (byte 0x80 at offset 0"},
        {"byte 0xFF", "a\xff", 0, RUNC_E_TOKENIZER, "byte 0xFF at offset 1"},
        {"cut 2-byte sequence", "\xc3", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"cut 3-byte sequence", "x\xe2\x82", 0, RUNC_E_TOKENIZER, "offset 1"},
        {"overlong slash", "\xc0\xaf", 0, RUNC_E_TOKENIZER, "byte 0xC0"},
        {"overlong 3-byte", "\xe0\x80\xaf", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"overlong 4-byte", "\xf0\x80\x80\xaf", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"surrogate", "\xed\xa0\x80", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"above U+10FFFF", "\xf4\x90\x80\x80", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"bad continuation", "\xe2\x28\xa1", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"5-byte form", "\xf8\x88\x80\x80", 0, RUNC_E_TOKENIZER, "not valid UTF-8"},
        {"e-acute", "\xc3\xa9", 0, RUNC_OK, ""},
        {"euro", "\xe2\x82\xac", 0, RUNC_OK, ""},
        {"U+FFFF", "\xef\xbf\xbf", 0, RUNC_OK, ""},
        {"U+10FFFF", "\xf4\x8f\xbf\xbf", 0, RUNC_OK, ""},
        {"emoji", "\xf0\x9f\x98\x80", 0, RUNC_OK, ""},
        /* a NUL would cut every answer holding the piece ("106" for "106.00"): refused (issue 25) */
        {"a NUL byte", "", 0, RUNC_E_TOKENIZER, "token 5 holds a NUL byte (at offset 0 of the piece)"}, /* written by hand below */
    };
    int k, n = (int)(sizeof cases / sizeof cases[0]);
    for (k = 0; k < n; k++) {
        vocab_entry v[N_DIGITS];
        int V, rc;
        buf tb;
        runc_tokenizer *t = (runc_tokenizer *)&t;
        runc_error e;
        memcpy(v, digits_vocab, sizeof v);
        v[5].piece = cases[k].piece;
        if (k == n - 1) v[5].piece = "@"; /* then overwritten with a NUL byte */
        tb = write_tokenizer(v, N_DIGITS, cases[k].bytes, &V);
        if (k == n - 1) {
            /* digits_vocab[5] is the 6th entry: 4 + the first five entries' bytes + 8 */
            size_t off = 4 + (8 + 5) + (8 + 3) + (8 + 4) + (8 + 1) + (8 + 1) + 8;
            CHECK(tb.p[off] == '@', "NUL case offset");
            tb.p[off] = '\0';
        }
        rc = runc_tokenizer_open_buffer(&t, tb.p, tb.n, V, &e);
        CHECK(rc == cases[k].code && (rc == RUNC_OK) == (t != NULL) && strstr(e.message, cases[k].needle),
              "tokenizer piece '%s': %s (%s), expected %s", cases[k].what, runc_status_name(rc), e.message,
              runc_status_name(cases[k].code));
        if (rc == RUNC_OK) {
            int ids[64], nids = 0;
            char out[128];
            size_t len;
            /* the replaced piece is reachable by the encoder */
            if (k < n - 1) {
                char text[32];
                snprintf(text, sizeof text, "2%s3", cases[k].piece);
                rc = runc_encode(t, text, 1, 0, ids, 64, &nids, &e);
                CHECK(rc == RUNC_OK && nids == 5 && ids[3] == 5, "piece '%s' encodes to id 5 (%s)", cases[k].what,
                      e.message);
                rc = runc_decode(t, ids[0], ids + 1, nids - 1, out, sizeof out, &len, &e);
                CHECK(rc == RUNC_OK && strcmp(out, text) == 0, "piece '%s' round trip", cases[k].what);
            }
            runc_tokenizer_close(t);
        }
        free(tb.p);
    }
    /* a file with max_token_length and nothing else: no vocabulary */
    {
        int32_t four = 4;
        runc_tokenizer *t = NULL;
        runc_error e;
        int rc = runc_tokenizer_open_buffer(&t, &four, 4, 25, &e);
        CHECK(rc == RUNC_E_TRUNCATED && t == NULL && strstr(e.message, "no vocabulary"), "missing vocabulary: %s",
              e.message);
    }
    /* a header claiming far longer pieces than there are: the real longest counts (fuzz_tokenizer
     * found callers sizing buffers by the claim: context x 65536 bytes) */
    {
        int V;
        buf tb = write_tokenizer(digits_vocab, N_DIGITS, 0, &V);
        int32_t claim = RUNC_MAX_TOKEN_LENGTH;
        runc_tokenizer *t = NULL;
        runc_error e;
        memcpy(tb.p, &claim, 4);
        CHECK(runc_tokenizer_open_buffer(&t, tb.p, tb.n, V, &e) == RUNC_OK && runc_tokenizer_max_token_length(t) == 5,
              "max_token_length is the longest piece (5), not the header's %d: %d", (int)claim,
              runc_tokenizer_max_token_length(t));
        runc_tokenizer_close(t);
        free(tb.p);
    }
    /* scores: infinite ones are allowed (-inf: never merged into) */
    {
        vocab_entry v[N_DIGITS];
        int V, ids[16], nids = 0, rc;
        buf tb;
        runc_tokenizer *t = NULL;
        runc_error e;
        memcpy(v, digits_vocab, sizeof v);
        v[21].score = -(float)INFINITY; /* "00" */
        v[23].score = (float)INFINITY;  /* ".00" */
        tb = write_tokenizer(v, N_DIGITS, 0, &V);
        rc = runc_tokenizer_open_buffer(&t, tb.p, tb.n, V, &e);
        CHECK(rc == RUNC_OK, "infinite scores load: %s", e.message);
        if (t) {
            rc = runc_encode(t, "100", 1, 0, ids, 16, &nids, &e);
            CHECK(rc == RUNC_OK && nids == 5, "a -inf piece is never merged into (%d tokens)", nids);
            runc_tokenizer_close(t);
        }
        free(tb.p);
    }
}

/* Every entry point with NULL pointers, empty buffers and bad counts: an
 * error code, never a crash (ASan/UBSan watch this in the sanitizer build). */
static void test_null_arguments(void)
{
    int V;
    buf tb = write_tokenizer(digits_vocab, N_DIGITS, 0, &V);
    spec sp = {"null", 1, 16, 40, 1, 4, 2, 25, 8, 1, 0, 0, 0, 0};
    weights w;
    buf mb;
    runc_model *m = NULL, *m2 = (runc_model *)&m2;
    runc_tokenizer *t = NULL, *t2 = (runc_tokenizer *)&t2;
    runc_state *st = NULL, *st2 = (runc_state *)&st2;
    runc_sampler *smp = NULL, *smp2 = (runc_sampler *)&smp2;
    runc_config cfg;
    runc_error e;
    int ids[16], n = -1, tok = -1, prompt[2] = {1, 4}, gen = -1;
    char out[64];
    size_t len = 99;
    const char *piece;
    const float *lg;
    float logits[25] = {0};

    sp.vocab = V;
    w = make_weights(sp);
    mb = write_model(&w);
    runc_model_open_buffer(&m, mb.p, mb.n, 0, NULL);
    runc_tokenizer_open_buffer(&t, tb.p, tb.n, V, NULL);
    runc_state_open(&st, m, 0, NULL);
    runc_sampler_open(&smp, V, 0.0f, 0.0f, 1, NULL);
    if (!m || !t || !st || !smp) {
        CHECK(0, "null-argument fixtures open");
        return;
    }
    /* loaders */
    CHECK(runc_parse_header(NULL, 0, &cfg, &e) == RUNC_E_EMPTY, "parse_header(NULL, 0)");
    CHECK(runc_parse_header(NULL, 256, &cfg, &e) == RUNC_E_ARG, "parse_header(NULL, 256)");
    CHECK(runc_parse_header(mb.p, mb.n, NULL, &e) == RUNC_E_ARG, "parse_header(config NULL)");
    CHECK(runc_model_open_buffer(&m2, NULL, 0, 0, &e) == RUNC_E_EMPTY && m2 == NULL, "open_buffer(NULL, 0)");
    CHECK(runc_model_open_buffer(NULL, mb.p, mb.n, 0, &e) == RUNC_E_ARG, "open_buffer(out NULL)");
    CHECK(runc_tokenizer_open_buffer(&t2, NULL, 0, V, &e) == RUNC_E_EMPTY && t2 == NULL, "tokenizer(NULL, 0)");
    CHECK(runc_tokenizer_open_buffer(&t2, NULL, 10, V, &e) == RUNC_E_ARG, "tokenizer(NULL, 10)");
    CHECK(runc_tokenizer_open_buffer(NULL, tb.p, tb.n, V, &e) == RUNC_E_ARG, "tokenizer(out NULL)");
    CHECK(runc_tokenizer_open_buffer(&t2, tb.p, tb.n, -1, &e) == RUNC_E_ARG, "tokenizer(vocab -1)");
    CHECK(runc_tokenizer_open(&t2, NULL, V, &e) == RUNC_E_ARG, "tokenizer_open(path NULL)");
    CHECK(runc_tokenizer_open(NULL, "x", V, &e) == RUNC_E_ARG, "tokenizer_open(out NULL)");
    /* closers and getters accept NULL */
    runc_model_close(NULL);
    runc_tokenizer_close(NULL);
    runc_state_close(NULL);
    runc_sampler_close(NULL);
    CHECK(runc_model_config(NULL) == NULL && runc_tokenizer_vocab_size(NULL) == 0 &&
              runc_tokenizer_max_token_length(NULL) == 0 && runc_state_context(NULL) == 0 &&
              runc_state_model(NULL) == NULL && runc_answer_cap(NULL, t) == 0 && runc_answer_cap(st, NULL) == 0,
          "getters of NULL");
    CHECK(runc_token_piece(NULL, 3, &len) == NULL && len == 0 && runc_token_piece(t, 3, NULL) != NULL &&
              runc_token_score(NULL, 3) == 0.0f && runc_token_score(t, V) == 0.0f,
          "token_piece / token_score of NULL or out of range");
    /* state and forward */
    CHECK(runc_state_open(&st2, NULL, 0, &e) == RUNC_E_ARG && st2 == NULL, "state_open(model NULL)");
    CHECK(runc_state_open(NULL, m, 0, &e) == RUNC_E_ARG, "state_open(out NULL)");
    CHECK(runc_state_open(&st2, m, -1, &e) == RUNC_E_ARG, "state_open(context -1)");
    CHECK(runc_forward(NULL, 1, 0, &lg, &e) == RUNC_E_ARG && lg == NULL, "forward(NULL)");
    CHECK(runc_forward(st, 1, -1, &lg, &e) == RUNC_E_CONTEXT, "forward(pos -1)");
    CHECK(runc_forward(st, INT32_MIN, 0, &lg, &e) == RUNC_E_ARG, "forward(token INT_MIN)");
    CHECK(runc_forward_tokens(NULL, prompt, 2, 0, NULL, &e) == RUNC_E_ARG, "forward_tokens(state NULL)");
    CHECK(runc_forward_tokens(st, NULL, 2, 0, NULL, &e) == RUNC_E_ARG, "forward_tokens(tokens NULL)");
    CHECK(runc_forward_tokens(st, NULL, 0, 0, NULL, &e) == RUNC_OK, "forward_tokens(0 tokens)");
    CHECK(runc_forward_tokens(st, prompt, -1, 0, NULL, &e) == RUNC_E_ARG, "forward_tokens(n -1)");
    CHECK(runc_forward_tokens(st, prompt, 2, INT_MAX, NULL, &e) == RUNC_E_CONTEXT, "forward_tokens(pos INT_MAX)");
    CHECK(runc_forward_tokens(st, prompt, 2, -5, NULL, &e) == RUNC_E_CONTEXT, "forward_tokens(pos -5)");
    CHECK(runc_forward_tokens(st, prompt, INT_MAX, 1, NULL, &e) == RUNC_E_CONTEXT, "forward_tokens(n INT_MAX)");
    /* sampler */
    CHECK(runc_sampler_open(NULL, V, 0.0f, 0.0f, 1, &e) == RUNC_E_ARG, "sampler_open(out NULL)");
    CHECK(runc_sampler_open(&smp2, V, (float)INFINITY, 0.5f, 1, &e) == RUNC_E_ARG && smp2 == NULL,
          "sampler_open(temperature inf)");
    smp2 = (runc_sampler *)&smp2;
    CHECK(runc_sampler_open(&smp2, V, 1.0f, -0.1f, 1, &e) == RUNC_E_ARG && smp2 == NULL && strstr(e.message, "top-p"),
          "sampler_open(top-p -0.1)");
    CHECK(runc_sampler_open(&smp2, V, 1.0f, (float)NAN, 1, &e) == RUNC_E_ARG && strstr(e.message, "top-p"),
          "sampler_open(top-p NaN)");
    CHECK(runc_sampler_open(&smp2, -4, 1.0f, 0.5f, 1, &e) == RUNC_E_ARG, "sampler_open(vocab -4)");
    CHECK(runc_sample(NULL, logits, &tok, NULL) == RUNC_E_ARG, "sample(NULL sampler)");
    CHECK(runc_sample(smp, NULL, &tok, NULL) == RUNC_E_ARG, "sample(NULL logits)");
    CHECK(runc_sample(smp, logits, NULL, NULL) == RUNC_E_ARG, "sample(NULL token)");
    /* encode / decode */
    CHECK(runc_encode(NULL, "1", 1, 0, ids, 16, &n, &e) == RUNC_E_ARG, "encode(tokenizer NULL)");
    CHECK(runc_encode(t, NULL, 1, 0, ids, 16, &n, &e) == RUNC_E_ARG, "encode(text NULL)");
    CHECK(runc_encode(t, "1", 1, 0, NULL, 16, &n, &e) == RUNC_E_ARG, "encode(tokens NULL)");
    CHECK(runc_encode(t, "1", 1, 0, ids, 16, NULL, &e) == RUNC_E_ARG, "encode(n NULL)");
    CHECK(runc_encode(t, "1", 1, 0, ids, -1, &n, &e) == RUNC_E_ARG, "encode(cap -1)");
    CHECK(runc_encode(t, "1", 1, 0, NULL, 0, &n, &e) == RUNC_E_BUFFER, "encode(cap 0)");
    CHECK(runc_encode(t, "", 0, 0, NULL, 0, &n, &e) == RUNC_OK && n == 0, "encode('' without BOS) is empty");
    CHECK(runc_decode(NULL, 1, prompt, 2, out, sizeof out, &len, &e) == RUNC_E_ARG, "decode(tokenizer NULL)");
    CHECK(runc_decode(t, 1, NULL, 2, out, sizeof out, &len, &e) == RUNC_E_ARG, "decode(tokens NULL)");
    CHECK(runc_decode(t, 1, prompt, -2, out, sizeof out, &len, &e) == RUNC_E_ARG, "decode(n -2)");
    CHECK(runc_decode(t, 1, prompt, 2, NULL, 10, &len, &e) == RUNC_E_ARG, "decode(out NULL)");
    CHECK(runc_decode(t, 1, prompt, 2, NULL, 0, &len, &e) == RUNC_E_BUFFER, "decode(cap 0)");
    CHECK(runc_decode(t, 1, prompt, 2, out, sizeof out, NULL, &e) == RUNC_OK, "decode(out_len NULL)");
    CHECK(runc_decode_piece(NULL, 1, 4, &piece, &len) == RUNC_E_ARG, "decode_piece(tokenizer NULL)");
    CHECK(runc_decode_piece(t, 1, 4, NULL, &len) == RUNC_E_ARG, "decode_piece(piece NULL)");
    CHECK(runc_decode_piece(t, 1, 4, &piece, NULL) == RUNC_E_ARG, "decode_piece(len NULL)");
    /* generation */
    CHECK(runc_generate(NULL, smp, prompt, 2, 3, -1, ids, NULL, &n, &e) == RUNC_E_ARG, "generate(state NULL)");
    CHECK(runc_generate(st, NULL, prompt, 2, 3, -1, ids, NULL, &n, &e) == RUNC_E_ARG, "generate(sampler NULL)");
    CHECK(runc_generate(st, smp, NULL, 2, 3, -1, ids, NULL, &n, &e) == RUNC_E_ARG, "generate(prompt NULL)");
    CHECK(runc_generate(st, smp, prompt, 2, 3, -1, NULL, NULL, &n, &e) == RUNC_E_ARG, "generate(out NULL)");
    CHECK(runc_generate(st, smp, prompt, 2, 3, -1, ids, NULL, NULL, &e) == RUNC_E_ARG, "generate(n NULL)");
    CHECK(runc_generate(st, smp, prompt, 2, -1, -1, ids, NULL, &n, &e) == RUNC_E_ARG, "generate(max_new -1)");
    CHECK(runc_generate(st, smp, prompt, -3, 3, -1, ids, NULL, &n, &e) == RUNC_E_CONTEXT, "generate(n_prompt -3)");
    CHECK(runc_generate(st, smp, prompt, 8, 3, -1, ids, NULL, &n, &e) == RUNC_E_CONTEXT,
          "generate(prompt filling the context)");
    CHECK(runc_generate(st, smp, prompt, 2, 0, -1, NULL, NULL, &n, &e) == RUNC_OK && n == 0,
          "generate(max_new 0, out NULL)");
    {
        runc_sampler *other = NULL;
        runc_sampler_open(&other, V + 1, 0.0f, 0.0f, 1, NULL);
        CHECK(runc_generate(st, other, prompt, 2, 3, -1, ids, NULL, &n, &e) == RUNC_E_ARG,
              "generate(sampler of another vocabulary)");
        runc_sampler_close(other);
    }
    CHECK(runc_solve(NULL, t, "1 =", out, sizeof out, &gen, &e) == RUNC_E_ARG && gen == 0, "solve(state NULL)");
    CHECK(runc_solve(st, NULL, "1 =", out, sizeof out, &gen, &e) == RUNC_E_ARG, "solve(tokenizer NULL)");
    CHECK(runc_solve(st, t, NULL, out, sizeof out, &gen, &e) == RUNC_E_ARG, "solve(prompt NULL)");
    CHECK(runc_solve(st, t, "1 =", NULL, sizeof out, &gen, &e) == RUNC_E_ARG, "solve(answer NULL)");
    CHECK(runc_solve(st, t, "1 =", out, 0, &gen, &e) == RUNC_E_ARG, "solve(cap 0)");
    /* an empty prompt is no problem: refused, not answered "0.00" (issue 25) */
    CHECK(runc_solve(st, t, "", out, sizeof out, &gen, &e) == RUNC_E_ARG && strstr(e.message, "empty prompt") &&
              out[0] == '\0' && gen == 0,
          "solve(''): %s", e.message);
    CHECK(runc_solve(st, t, " \t ", out, sizeof out, &gen, &e) == RUNC_E_ARG && strstr(e.message, "only whitespace"),
          "solve(whitespace): %s", e.message);
    CHECK(runc_solve(st, t, "1111111111", out, sizeof out, &gen, &e) == RUNC_E_CONTEXT, "solve(too long)");
    /* a NULL runc_error is fine everywhere */
    CHECK(runc_solve(st, t, "1 =", out, sizeof out, NULL, NULL) == RUNC_OK, "solve with NULL err");
    CHECK(runc_forward(st, V, 0, NULL, NULL) == RUNC_E_ARG, "forward with NULL err");
    /* still usable */
    CHECK(runc_solve(st, t, "1 =", out, sizeof out, &gen, &e) == RUNC_OK, "usable after misuse: %s", e.message);

    runc_sampler_close(smp);
    runc_state_close(st);
    runc_tokenizer_close(t);
    runc_model_close(m);
    free(mb.p);
    free(tb.p);
    free_weights(&w);
}
/* end of the hardening tests */

/* ------------------------------------------------------------------------ */
/* sizes past 32 bits (what armhf must refuse, not wrap) and big-endian hosts */
/* ------------------------------------------------------------------------ */

/* A v1/v2 header with the given fields, or a v0 one, zero-padded to n bytes. */
static unsigned char *header_file(int version, const int32_t f[7], int group, size_t n)
{
    buf b;
    memset(&b, 0, sizeof b);
    if (version == 0) put(&b, f, 7 * sizeof(int32_t));
    else put_model_header(&b, version, f, 1, group, 256);
    pad_to(&b, n);
    return b.p;
}

/* A 64-bit host sees a file shorter than its header implies; a 32-bit one a
 * model it cannot address. Never RUNC_OK, whatever the host. */
static void check_beyond_4gib(const char *what, const unsigned char *p, size_t n, unsigned long long implied)
{
    char needle[32];
    int want = SIZE_MAX > 0xFFFFFFFFu ? RUNC_E_TRUNCATED : RUNC_E_OVERFLOW;
    int k, rc;
    runc_config c;
    runc_error e;
    runc_model *m = NULL;
    if (want == RUNC_E_TRUNCATED) snprintf(needle, sizeof needle, "implies %llu", implied);
    else snprintf(needle, sizeof needle, "overflow");
    rc = runc_parse_header(p, n, &c, &e);
    CHECK(rc == want && strstr(e.message, needle), "%s: parse_header gives %s: %s (want %s, \"%s\")", what,
          runc_status_name(rc), e.message, runc_status_name(want), needle);
    rc = runc_model_open_buffer(&m, p, n, 0, &e);
    CHECK(rc == want && m == NULL, "%s: open_buffer gives %s: %s", what, runc_status_name(rc), e.message);
    write_temp(p, n);
    for (k = 0; k < 2; k++) {
        int flags = k ? RUNC_OPEN_NO_MMAP : 0;
        rc = runc_model_open(&m, tmp_path, flags, &e);
        CHECK(rc == want && m == NULL && strstr(e.message, needle), "%s: open (%s) gives %s: %s", what,
              k ? "read" : "mmap", runc_status_name(rc), e.message);
        runc_model_close(m);
        m = NULL;
    }
    remove(tmp_path);
}

static void test_sizes_beyond_4gib(void)
{
    /* wrap traps: fields whose true length is 2^32 + n bytes, in a file of n
     * bytes. Size arithmetic that wrapped modulo 2^32 would find the lengths
     * equal, accept the file and point tensors gigabytes past its end. */
    static const struct {
        const char *what;
        int version;
        int32_t f[7]; /* dim, hidden, layers, heads, kv heads, vocab, seq */
        int group;
        size_t n;
    } traps[] = {
        {"v1 of 2^32 + 1280 bytes in 1280", 1, {256, 256, 1, 1, 1, 4192510, 16}, 0, 1280},
        {"v2 of 2^32 + 1408 bytes in 1408", 2, {1024, 1024, 1, 1, 1, 3940402, 16}, 64, 1408},
        {"v0 of 2^32 + 1052 bytes in 1052", 0, {256, 256, 1, 1, 1, 4000000, 192510}, 0, 1052},
    };
    /* the header of a Llama-2 7B-sized fp32 model (tied: 26 GB) on a 256-byte file */
    static const int32_t llama7b[7] = {4096, 11008, 32, 32, 32, 32000, 2048};
    size_t i;
    for (i = 0; i < sizeof traps / sizeof traps[0]; i++) {
        unsigned char *p = header_file(traps[i].version, traps[i].f, traps[i].group, traps[i].n);
        check_beyond_4gib(traps[i].what, p, traps[i].n, 4294967296ull + traps[i].n);
        free(p);
    }
    {
        unsigned char *p = header_file(1, llama7b, 0, 256);
        check_beyond_4gib("Llama-2 7B header", p, 256, 26429374720ull);
        free(p);
    }

    /* A valid 525 KB file whose KV cache is n_layers * context * kv_dim floats
     * = 4096 * 2^20 * 2: n_layers * context alone is 2^32. A 32-bit host must
     * refuse the state; a 64-bit one would allocate 64 GiB, so it only opens
     * a short context. */
    {
        const int32_t f[7] = {2, 2, 4096, 1, 1, 4, 1048576};
        size_t D = 2, L = 4096, floats = 2 * L * D + D + L * (2 * D * D + 2 * D * D + 3 * D * D) + 4 * D;
        unsigned char *p = header_file(1, f, 0, 256 + 4 * floats);
        runc_model *m = NULL;
        runc_state *st = NULL;
        runc_error e;
        int rc = runc_model_open_buffer(&m, p, 256 + 4 * floats, 0, &e);
        CHECK(rc == RUNC_OK, "4096-layer model opens: %s", e.message);
        if (rc == RUNC_OK) {
#if SIZE_MAX <= 0xFFFFFFFFu
            rc = runc_state_open(&st, m, 0, &e);
            CHECK(rc == RUNC_E_OVERFLOW && st == NULL && strstr(e.message, "overflow"),
                  "KV cache of 2^33 floats on a 32-bit host: %s: %s", runc_status_name(rc), e.message);
            runc_state_close(st);
            st = NULL;
#endif
            rc = runc_state_open(&st, m, 16, &e);
            CHECK(rc == RUNC_OK, "4096-layer model, context 16: %s", e.message);
            runc_state_close(st);
        }
        runc_model_close(m);
        free(p);
    }

    /* runc_answer_cap is context * max_token_length + 1 = 2^36 + 1 here:
     * SIZE_MAX (refused by malloc) on a 32-bit host, never a wrapped 1 */
    {
        const int32_t f[7] = {2, 2, 1, 1, 1, 4, 1048576};
        size_t D = 2, floats = 3 * D + (2 * D * D + 2 * D * D + 3 * D * D) + 4 * D;
        unsigned char *p = header_file(1, f, 0, 256 + 4 * floats);
        static const char *const pieces[4] = {"a", "b", "c", "d"};
        buf tb;
        runc_model *m = NULL;
        runc_state *st = NULL;
        runc_tokenizer *t = NULL;
        runc_error e;
        int rc, k;
        memset(&tb, 0, sizeof tb);
        put_i32(&tb, RUNC_MAX_TOKEN_LENGTH);
        for (k = 0; k < 4; k++) { /* the last piece as long as allowed: max_token_length is the longest piece */
            int len = k < 3 ? 1 : RUNC_MAX_TOKEN_LENGTH, j;
            put_f32(&tb, 0.0f);
            put_i32(&tb, len);
            for (j = 0; j < len; j++) put(&tb, pieces[k], 1);
        }
        rc = runc_model_open_buffer(&m, p, 256 + 4 * floats, 0, &e);
        if (rc == RUNC_OK) rc = runc_state_open(&st, m, 0, &e);
        if (rc == RUNC_OK) rc = runc_tokenizer_open_buffer(&t, tb.p, tb.n, 4, &e);
        CHECK(rc == RUNC_OK, "context 2^20, max_token_length 2^16: %s", e.message);
        if (rc == RUNC_OK) {
            size_t cap = runc_answer_cap(st, t);
            /* the default answer cap bounds the buffer (issue 25): 512 tokens of the longest piece */
            CHECK(cap == (size_t)RUNC_DEFAULT_MAX_ANSWER * RUNC_MAX_TOKEN_LENGTH + 1, "default answer cap %zu", cap);
            /* answers as long as the context: 2^20 tokens of 2^16 bytes */
            CHECK(runc_state_set_max_answer(st, RUNC_MAX_SEQ_LEN, &e) == RUNC_OK, "max_answer 2^20: %s", e.message);
            cap = runc_answer_cap(st, t);
#if SIZE_MAX > 0xFFFFFFFFu
            CHECK(cap == ((size_t)1 << 36) + 1, "answer cap %zu, want 2^36 + 1", cap);
#else
            CHECK(cap == SIZE_MAX, "answer cap %zu on a 32-bit host, want SIZE_MAX", cap);
#endif
        }
        runc_tokenizer_close(t);
        runc_state_close(st);
        runc_model_close(m);
        free(tb.p);
        free(p);
    }
}

static int host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* On a big-endian host every entry point that reads a file refuses it with
 * RUNC_E_UNSUPPORTED and a message saying why, instead of misreading it. */
static void test_big_endian_host(void)
{
    spec s1 = {"v1 untied", 1, 16, 36, 2, 4, 2, 20, 8, 0, 0, 1, 500.0f, 1e-3f};
    weights w = make_weights(s1);
    buf b = write_model(&w);
    unsigned char tok[16] = {0};
    runc_config c;
    runc_error e;
    runc_model *m = NULL;
    runc_tokenizer *t = NULL;
    int rc, k;
    rc = runc_parse_header(b.p, b.n, &c, &e);
    CHECK(rc == RUNC_E_UNSUPPORTED && strstr(e.message, "little-endian"), "big-endian parse_header: %s: %s",
          runc_status_name(rc), e.message);
    rc = runc_model_open_buffer(&m, b.p, b.n, 0, &e);
    CHECK(rc == RUNC_E_UNSUPPORTED && m == NULL && strstr(e.message, "little-endian"),
          "big-endian open_buffer: %s: %s", runc_status_name(rc), e.message);
    write_temp(b.p, b.n);
    for (k = 0; k < 2; k++) {
        rc = runc_model_open(&m, tmp_path, k ? RUNC_OPEN_NO_MMAP : 0, &e);
        CHECK(rc == RUNC_E_UNSUPPORTED && m == NULL && strstr(e.message, "little-endian"),
              "big-endian open (%s): %s: %s", k ? "read" : "mmap", runc_status_name(rc), e.message);
    }
    remove(tmp_path);
    rc = runc_tokenizer_open_buffer(&t, tok, sizeof tok, 1, &e);
    CHECK(rc == RUNC_E_UNSUPPORTED && t == NULL && strstr(e.message, "little-endian"),
          "big-endian tokenizer: %s: %s", runc_status_name(rc), e.message);
    free(b.p);
    free_weights(&w);
}

/* runc_final_answer: the text after the last '#', or all of a direct answer. */
static void test_final_answer(void)
{
    static const struct {
        const char *answer;
        size_t offset;
    } cases[] = {
        {"4256.00", 0},
        {"", 0},
        {"6*6=36 7*6=42 3+1=4#4256.00", 20},
        {"a#b#c", 4},
        {"#", 1},
        {"12#", 3},
        {"#-8.00", 1},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(runc_final_answer(cases[i].answer) == cases[i].offset, "final answer of \"%s\": offset %zu, want %zu",
              cases[i].answer, runc_final_answer(cases[i].answer), cases[i].offset);
    CHECK(runc_final_answer(NULL) == 0, "final answer of NULL");
    CHECK(RUNC_STEPS_MARK == '#', "the steps mark is '#'");
}

int main(void)
{
    if (!host_little_endian()) { /* the formats are little-endian: check the refusal only */
        test_big_endian_host();
        printf("%d passed, %d failed (big-endian host: refusal checks only)\n", n_pass, n_fail);
        return n_fail == 0 ? 0 : 1;
    }
    test_forward_matches_reference();
    test_load_paths_agree();
    test_int8_close_to_fp32();
    test_corrupt_models();
    test_tokenizer();
    test_sampler();
    test_generation();
    test_prefix_reuse();
    test_corrupt_weights();
    test_tokenizer_pieces();
    test_null_arguments();
    test_sizes_beyond_4gib();
    test_final_answer();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
