/*
 * train.c - the training engine of train.h: forward, backward, cross-entropy
 * on answer tokens, global-norm clipping and AdamW for train/model.py's Llama,
 * in one arena, with worker threads splitting the batch rows.
 *
 * Layout. A batch of B rows x W columns is packed: row r contributes only its
 * positions 0 .. last answer position (later positions cannot change the loss
 * under causal attention, and earlier ones are all real tokens), so no work
 * goes to padding. Activations are token-major (one row of dim floats per
 * computed position); every layer keeps what the backward pass needs (its
 * input, RMSNorm scales, normalized inputs, post-RoPE q and k, v, attention
 * probabilities, attention output, SwiGLU's inputs a and b and sigmoid(a); its
 * output costs less to compute again than to read back). Attention
 * works on one row and kv head at a time, on copies of K and V packed in the
 * worker's scratch so that its loops run over 8 contiguous floats (positions
 * or channels); a position p's probabilities are kept padded to round8(p + 1).
 *
 * Threads. Worker t takes a contiguous run of rows (balanced by positions)
 * and runs the whole forward and backward pass on them, with its own gradient
 * buffer; the buffers are then summed in worker order. A given thread count
 * therefore gives the same bits every time; different counts differ in the
 * order of the gradients' summation.
 *
 * Where the engine differs from PyTorch: the order of float additions (matrix
 * products sum over their inner dimension in index order; gradients of the
 * weights sum positions in row order, per worker; attention's weighted sums
 * go over positions in order, dK and dV over the query positions of one
 * head, then the heads of a kv group in order; a softmax's sum and its
 * backward pass's dot product add 8 partial sums, position u in the
 * (u mod 8)th, then the 8 in order; RMSNorm's sums over channels likewise;
 * the cross-entropy's exp(logit - max) summed in double, the losses summed in
 * double, the gradient norm accumulated in double), the attention softmax
 * scaling by 1 / sum, and exp computed by runc_expf's method (within about
 * 1 ulp; the softmax's with fused multiply-adds in the AVX2 and AVX-512 builds: see
 * train_kernels.c.inc). Every operation is the same otherwise (RMSNorm as
 * x * rsqrt(mean(x^2) + eps) * w, RoPE as the complex product of
 * train/model.py, scores as (q . k) * 1/sqrt(head size), AdamW as
 * train/optim.py's foreach sequence with float scalars).
 *
 * Subnormal floats (below 1.2e-38) are flushed to zero while the engine
 * computes, on x86-64 and aarch64 (see flush_subnormals below); PyTorch keeps
 * them. A value that small changes no sum it joins, so only a weight or
 * moment already that small differs.
 */
#include "train.h"
#include "runc_impl.h" /* runc_set_error, and runc_expf: the library's exp, a loop of which vectorises */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RUNC_NO_THREADS
#include <pthread.h>
#endif
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
#include <xmmintrin.h>
#endif

/* ---- subnormals ---------------------------------------------------------------- */

/* An operation on a subnormal float costs a hundred cycles or more on x86. Weight decay that
 * outweighs a weight's gradients drives the weight and its Adam moments there: a mod-97 run at
 * weight decay 3 whose feed-forward weights decayed away slowed from 8 to 200 seconds per 1,000
 * steps. So each entry point sets the thread's flush-to-zero and denormals-are-zero modes (x86:
 * MXCSR's FTZ and DAZ bits; aarch64: FPCR.FZ) and puts the caller's mode back before it returns;
 * worker threads set it for their own life. Elsewhere (armhf, other CPUs) nothing changes. */
typedef unsigned long long fp_mode;

static fp_mode flush_subnormals(void)
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
    const unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
#elif defined(__aarch64__)
    unsigned long long old;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old | (1ull << 24))); /* FZ */
    return old;
#else
    return 0;
#endif
}

static void restore_fp_mode(fp_mode old)
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
    _mm_setcsr((unsigned int)old);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
#else
    (void)old;
#endif
}


/* ---- the object -------------------------------------------------------------- */

enum { K_EMB, K_ATTN_NORM, K_WQ, K_WK, K_WV, K_WO, K_FFN_NORM, K_W1, K_W2, K_W3, K_NORM, K_OUT };
static const char *const kind_names[] = {
    "tok_embeddings.weight", "attention_norm.weight", "attention.wq.weight", "attention.wk.weight",
    "attention.wv.weight", "attention.wo.weight", "ffn_norm.weight", "feed_forward.w1.weight",
    "feed_forward.w2.weight", "feed_forward.w3.weight", "norm.weight", "output.weight"};

typedef struct {
    size_t off;      /* first float in the parameter buffers */
    size_t wt_off;   /* a matrix: its transpose (cols x rows, rows padded to 8) in wt */
    size_t wp_off;   /* a matrix: itself with cols padded to 8, in wp */
    int rows, cols, kind, layer, decay;
} tensor;

/* Per-worker state of one forward/backward call. */
typedef struct {
    struct runc_trainer *t;
    int r0, r1;          /* rows */
    int n0, n1;          /* positions */
    int s0, s1;          /* answer positions */
    float *grad;         /* this worker's gradient buffer */
    float *scratch;      /* attention's packed copies and score gradients: scratch_n floats */
    float *ffn;          /* SwiGLU's output for one chunk of positions: CHUNK x Hp */
    const float **rows;  /* max_seq_len row pointers (attention's backward pass) */
    double loss;
} worker;

struct runc_trainer {
    runc_train_config c;
    int hd, kv_dim, rep;
    int Dp, KVp, Hp, Vp;              /* dim, kv_dim, hidden_dim, vocab_size rounded up to 8: row strides */
    int hdp, Sp;                      /* head size and max_seq_len rounded up to 8 */
    size_t n_params, n_wt, n_wp, max_tok, max_prob, scratch_n;
    int n_tensors;
    tensor *tensors;
    size_t emb, norm;                 /* offsets */
    int out_index, norm_index;        /* the classifier's tensor (the embedding when tied), the final norm's */
    void (*run_rows)(worker *w);      /* the portable, AVX2 or AVX-512 build of train_kernels.c.inc's run_rows */
    const char *kernels;              /* its name */
    long long adam_steps;
    size_t arena_bytes;
    unsigned char *arena;
    /* parameters and optimizer */
    float *params, *grads, *m, *v;
    float *wt, *wp;                   /* padded copies of the matrices, for the products (see tensor) */
    float *wgrads;                    /* (threads - 1) x n_params: workers 1.. */
    float *scratch;                   /* threads x scratch_n */
    float *ffn;                       /* threads x RUNC_TRAIN_CHUNK x Hp (see worker) */
    const float **rows;               /* threads x max_seq_len */
    size_t *tri_off;                  /* max_seq_len + 1: sum of round8(p' + 1) over p' < p (see load_batch) */
    float *rope_cos, *rope_sin;       /* max_seq_len x Dp: per position, each channel pair's cos twice and
                                         its sin as (-sin, sin), for every head; zero past dim (see rope) */
    /* the batch */
    int *row_tok;                     /* max_batch + 1: first position of each row */
    int *row_sel;                     /* max_batch + 1: first answer position of each row */
    int *tok, *pos;                   /* max_tok */
    size_t *prob_off;                 /* max_tok: offset of a position's probabilities in a layer: head h's
                                         round8(p + 1) floats (zero past p) at prob_off + h * round8(p + 1) */
    int *sel_tok, *sel_tgt;           /* max_tok: answer positions and their targets */
    /* activations (per layer l: base + l * stride) */
    float *x;                         /* (L + 1) x max_tok x dim: layer inputs, then the last output */
    float *rstd1, *rstd2;             /* L x max_tok */
    float *xn1, *xn2, *q, *y, *xm;    /* L x max_tok x dim */
    float *k, *v_;                    /* L x max_tok x kv_dim */
    float *prob;                      /* L x max_prob */
    float *a, *b, *sg;                /* L x max_tok x hidden: SwiGLU's inputs and sigmoid(a) (its output
                                         is computed again in the backward pass, a chunk at a time) */
    float *rstdf, *xnf, *logits;      /* answer positions: max_tok, x dim, x vocab */
    /* backward scratch */
    float *dx, *dxn, *dq, *dy;        /* max_tok x dim */
    float *dxf;                       /* answer positions x dim: the final norm's output gradient */
    float *dk, *dv;                   /* max_tok x kv_dim */
    float *da, *db, *dg;              /* max_tok x hidden */
    float *dlog;                      /* max_tok x vocab */
    worker *workers;
    int n_rows, n_sel;                /* of the current batch */
};

static int round8(int n) { return (n + 7) & ~7; }

/* The operations of a layer that work position by position go this many positions at a time, each
 * stretch through all of them, so its data stays in the cache; the sums (the weights' and the norms'
 * gradients included: they add the stretches in order) are the same as in one pass. */
enum { RUNC_TRAIN_CHUNK = 96 };

/* A worker's attention scratch (scratch_n floats), for one row and kv head at a time: K^T and
 * V^T (hd x Sp: key positions contiguous), K, V, Q, dY, dK, dV (rows of hdp floats, channels
 * past hd unused), a spare row (the scores of the queries past a row's end), 8 output rows of
 * hdp floats, and one head's score gradients (query p's round8(p + 1) floats at tri_off[p]). */
typedef struct {
    float *kt, *vt, *kp, *vp, *qp, *dyp, *dkp, *dvp, *junk, *out, *ds;
} att_bufs;

static void att_scratch(const struct runc_trainer *t, float *s, att_bufs *b);

/* ---- compute: train_kernels.c.inc, portable and (x86-64, GCC/clang) AVX2+FMA and AVX-512 ---- */

#define TK_CAT2(a, b) a##b
#define TK_CAT(a, b) TK_CAT2(a, b)
#if (defined(__GNUC__) || defined(__clang__)) && !defined(RUNC_NO_VECTOR_EXT)
#define TK_VEC 1
typedef float tk_v8 __attribute__((vector_size(32)));
typedef int tk_i8 __attribute__((vector_size(32)));  /* the lanes of a comparison */
#if defined(__clang__)
#define TK_SWAP_PAIRS(v) __builtin_shufflevector((v), (v), 1, 0, 3, 2, 5, 4, 7, 6)
#else
#define TK_SWAP_PAIRS(v) __builtin_shuffle((v), (tk_i8){1, 0, 3, 2, 5, 4, 7, 6})
#endif
#else
#define TK_VEC 0
#endif

#define TK_SUFFIX _portable
#define TK_ATTR
#define TK_USE_FMA 0
#define TK_W16 0
#include "train_kernels.c.inc"
#undef TK_SUFFIX
#undef TK_ATTR
#undef TK_USE_FMA

#if TK_VEC && (defined(__x86_64__) || defined(__i386__)) && !defined(RUNC_NO_DISPATCH)
#define TK_HAVE_AVX2 1
#include <immintrin.h>
#define TK_SUFFIX _avx2
#define TK_ATTR __attribute__((target("avx2,fma")))
#define TK_USE_FMA 1
#include "train_kernels.c.inc"
#undef TK_SUFFIX
#undef TK_ATTR
/* the AVX2 build with the matrix products' widest tiles in 16-float vectors (same results) */
#define TK_SUFFIX _avx512
#define TK_ATTR __attribute__((target("avx512f,avx2,fma")))
#undef TK_W16
#define TK_W16 1
#include "train_kernels.c.inc"
#undef TK_SUFFIX
#undef TK_ATTR
#undef TK_USE_FMA
#else
#define TK_HAVE_AVX2 0
#endif
#undef TK_W16

static void att_scratch(const runc_trainer *t, float *s, att_bufs *b)
{
    const size_t sq = (size_t)t->hd * (size_t)t->Sp, rows = (size_t)t->Sp * (size_t)t->hdp;
    b->kt = s;
    b->vt = b->kt + sq;
    b->kp = b->vt + sq;
    b->vp = b->kp + rows;
    b->qp = b->vp + rows;
    b->dyp = b->qp + rows;
    b->dkp = b->dyp + rows;
    b->dvp = b->dkp + rows;
    b->junk = b->dvp + rows;
    b->out = b->junk + t->Sp;
    b->ds = b->out + 8 * (size_t)t->hdp;
}

/* ---- configuration ----------------------------------------------------------- */

void runc_train_config_default(runc_train_config *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->dim = 64;
    c->hidden_dim = 176;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 4;
    c->vocab_size = 32;
    c->max_seq_len = 32;
    c->tied = 1;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_batch = 128;
    c->threads = 1;
    c->beta1 = 0.9;
    c->beta2 = 0.99;
    c->adam_eps = 1e-8;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
}

static int check_config(const runc_train_config *c, runc_error *err)
{
    static const struct { const char *name; size_t at; int cap; } ints[] = {
        {"dim", offsetof(runc_train_config, dim), RUNC_MAX_DIM},
        {"hidden_dim", offsetof(runc_train_config, hidden_dim), RUNC_MAX_HIDDEN_DIM},
        {"n_layers", offsetof(runc_train_config, n_layers), RUNC_MAX_LAYERS},
        {"n_heads", offsetof(runc_train_config, n_heads), RUNC_MAX_HEADS},
        {"n_kv_heads", offsetof(runc_train_config, n_kv_heads), RUNC_MAX_HEADS},
        {"vocab_size", offsetof(runc_train_config, vocab_size), RUNC_MAX_VOCAB},
        {"max_seq_len", offsetof(runc_train_config, max_seq_len), 65536},
        {"max_batch", offsetof(runc_train_config, max_batch), 1 << 20},
        {"threads", offsetof(runc_train_config, threads), 256},
    };
    size_t i;
    for (i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int value;
        memcpy(&value, (const char *)c + ints[i].at, sizeof value);
        if (value <= 0 || value > ints[i].cap)
            return runc_set_error(err, RUNC_E_FIELD, "train config: %s must be in 1..%d, got %d", ints[i].name,
                             ints[i].cap, value);
    }
    if (c->dim % c->n_heads)
        return runc_set_error(err, RUNC_E_SHAPE, "train config: n_heads (%d) must divide dim (%d)", c->n_heads, c->dim);
    if (c->n_heads % c->n_kv_heads)
        return runc_set_error(err, RUNC_E_SHAPE, "train config: n_kv_heads (%d) must divide n_heads (%d)", c->n_kv_heads,
                         c->n_heads);
    if ((c->dim / c->n_heads) % 2)
        return runc_set_error(err, RUNC_E_SHAPE, "train config: head size dim/n_heads (%d) must be even for RoPE",
                         c->dim / c->n_heads);
    if (c->tied != 0 && c->tied != 1)
        return runc_set_error(err, RUNC_E_FIELD, "train config: tied must be 0 or 1, got %d", c->tied);
    if (c->kernels != RUNC_KERNELS_AUTO && c->kernels != RUNC_KERNELS_PORTABLE && c->kernels != RUNC_KERNELS_AVX2)
        return runc_set_error(err, RUNC_E_FIELD, "train config: kernels must be %d (auto), %d (portable) or %d "
                         "(avx2), got %d", RUNC_KERNELS_AUTO, RUNC_KERNELS_PORTABLE, RUNC_KERNELS_AVX2, c->kernels);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return runc_set_error(err, RUNC_E_FIELD, "train config: norm_eps must be positive and finite, got %g",
                         (double)c->norm_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return runc_set_error(err, RUNC_E_FIELD, "train config: rope_theta must be positive and finite, got %g",
                         (double)c->rope_theta);
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0))
        return runc_set_error(err, RUNC_E_FIELD, "train config: beta1 must be in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
        return runc_set_error(err, RUNC_E_FIELD, "train config: beta2 must be in [0, 1), got %g", c->beta2);
    if (!(c->adam_eps >= 0.0) || !isfinite(c->adam_eps))
        return runc_set_error(err, RUNC_E_FIELD, "train config: adam_eps must be >= 0 and finite, got %g", c->adam_eps);
    if (!(c->weight_decay >= 0.0) || !isfinite(c->weight_decay))
        return runc_set_error(err, RUNC_E_FIELD, "train config: weight_decay must be >= 0 and finite, got %g",
                         c->weight_decay);
    if (!(c->grad_clip >= 0.0) || !isfinite(c->grad_clip))
        return runc_set_error(err, RUNC_E_FIELD, "train config: grad_clip must be >= 0 and finite, got %g", c->grad_clip);
    return RUNC_OK;
}

/* ---- the arena ---------------------------------------------------------------- */

/* Carves 64-byte aligned blocks out of the arena; with base NULL it only
 * measures. n counts elements of `size` bytes; overflow sets *bad. */
typedef struct {
    unsigned char *base;
    size_t used;
    int bad;
} carver;

static void *carve(carver *cv, size_t n, size_t size)
{
    size_t bytes, start;
    if (cv->bad) return NULL;
    if (n && size > SIZE_MAX / n) {
        cv->bad = 1;
        return NULL;
    }
    bytes = n * size;
    start = (cv->used + 63u) & ~(size_t)63u;
    if (start < cv->used || bytes > SIZE_MAX - start - 64u) {
        cv->bad = 1;
        return NULL;
    }
    cv->used = start + bytes;
    return cv->base ? cv->base + start : NULL;
}

/* size_t product that reports overflow */
static size_t mul3(size_t a, size_t b, size_t c, int *bad)
{
    if (a && b > SIZE_MAX / a) {
        *bad = 1;
        return 0;
    }
    a *= b;
    if (a && c > SIZE_MAX / a) {
        *bad = 1;
        return 0;
    }
    return a * c;
}

static void lay_out(runc_trainer *t, carver *cv)
{
    const runc_train_config *c = &t->c;
    const size_t L = (size_t)c->n_layers, T = (size_t)c->threads, D = (size_t)c->dim;
    const size_t H = (size_t)c->hidden_dim, KV = (size_t)t->kv_dim, V = (size_t)c->vocab_size;
    const size_t NT = t->max_tok, S = (size_t)c->max_seq_len;
    const size_t DP = (size_t)t->Dp, KVP = (size_t)t->KVp, HP = (size_t)t->Hp, VP = (size_t)t->Vp;
    int bad = 0;
#define F(n) ((float *)carve(cv, (n), sizeof(float)))
    t->params = F(t->n_params);
    t->grads = F(t->n_params);
    t->m = F(t->n_params);
    t->v = F(t->n_params);
    t->wt = F(t->n_wt);
    t->wp = F(t->n_wp);
    t->wgrads = F(mul3(T - 1, t->n_params, 1, &bad));
    t->scratch = F(mul3(T, t->scratch_n, 1, &bad));
    t->tri_off = (size_t *)carve(cv, S + 1, sizeof(size_t));
    t->rope_cos = F(mul3(S, (size_t)t->Dp, 1, &bad));
    t->rope_sin = F(mul3(S, (size_t)t->Dp, 1, &bad));
    t->row_tok = (int *)carve(cv, (size_t)c->max_batch + 1, sizeof(int));
    t->row_sel = (int *)carve(cv, (size_t)c->max_batch + 1, sizeof(int));
    t->tok = (int *)carve(cv, NT, sizeof(int));
    t->pos = (int *)carve(cv, NT, sizeof(int));
    t->prob_off = (size_t *)carve(cv, NT, sizeof(size_t));
    t->sel_tok = (int *)carve(cv, NT, sizeof(int));
    t->sel_tgt = (int *)carve(cv, NT, sizeof(int));
    t->x = F(mul3(L + 1, NT, DP, &bad));
    t->rstd1 = F(mul3(L, NT, 1, &bad));
    t->rstd2 = F(mul3(L, NT, 1, &bad));
    t->xn1 = F(mul3(L, NT, DP, &bad));
    t->xn2 = F(mul3(L, NT, DP, &bad));
    t->q = F(mul3(L, NT, DP, &bad));
    t->y = F(mul3(L, NT, DP, &bad));
    t->xm = F(mul3(L, NT, DP, &bad));
    t->k = F(mul3(L, NT, KVP, &bad));
    t->v_ = F(mul3(L, NT, KVP, &bad));
    t->prob = F(mul3(L, t->max_prob, 1, &bad));
    t->a = F(mul3(L, NT, HP, &bad));
    t->b = F(mul3(L, NT, HP, &bad));
    t->sg = F(mul3(L, NT, HP, &bad));
    t->ffn = F(mul3(T, RUNC_TRAIN_CHUNK, HP, &bad));
    t->rstdf = F(NT);
    t->xnf = F(mul3(NT, DP, 1, &bad));
    t->logits = F(mul3(NT, VP, 1, &bad));
    t->dx = F(mul3(NT, DP, 1, &bad));
    t->dxn = F(mul3(NT, DP, 1, &bad));
    t->dq = F(mul3(NT, DP, 1, &bad));
    t->dy = F(mul3(NT, DP, 1, &bad));
    t->dxf = F(mul3(NT, DP, 1, &bad));
    t->dk = F(mul3(NT, KVP, 1, &bad));
    t->dv = F(mul3(NT, KVP, 1, &bad));
    t->da = F(mul3(NT, HP, 1, &bad));
    t->db = F(mul3(NT, HP, 1, &bad));
    t->dg = F(mul3(NT, HP, 1, &bad));
    t->dlog = F(mul3(NT, VP, 1, &bad));
    t->rows = (const float **)carve(cv, mul3(T, S, 1, &bad), sizeof(const float *));
    t->workers = (worker *)carve(cv, T, sizeof(worker));
    t->tensors = (tensor *)carve(cv, (size_t)t->n_tensors, sizeof(tensor));
#undef F
    (void)D, (void)H, (void)KV, (void)V;
    if (bad) cv->bad = 1;
}

/* The tensor table, in torch's named_parameters() order; with tab NULL it only
 * counts the floats of the parameters and of the padded copies. */
typedef struct {
    tensor *tab;
    int n;
    size_t off, wt, wp;
} table;

static void add_tensor(table *tb, int kind, int layer, int rows, int cols, int decay)
{
    if (tb->tab) {
        tensor *e = &tb->tab[tb->n];
        e->off = tb->off;
        e->wt_off = tb->wt;
        e->wp_off = tb->wp;
        e->rows = rows;
        e->cols = cols;
        e->kind = kind;
        e->layer = layer;
        e->decay = decay;
    }
    tb->n++;
    tb->off += (size_t)rows * (size_t)cols;
    if (cols > 1) {
        tb->wt += (size_t)cols * (size_t)round8(rows);
        tb->wp += (size_t)rows * (size_t)round8(cols);
    }
}

static void build_tensors(const runc_train_config *c, int kv_dim, table *tb)
{
    int l;
    add_tensor(tb, K_EMB, -1, c->vocab_size, c->dim, 0);
    for (l = 0; l < c->n_layers; l++) {
        add_tensor(tb, K_ATTN_NORM, l, c->dim, 1, 0);
        add_tensor(tb, K_WQ, l, c->dim, c->dim, 1);
        add_tensor(tb, K_WK, l, kv_dim, c->dim, 1);
        add_tensor(tb, K_WV, l, kv_dim, c->dim, 1);
        add_tensor(tb, K_WO, l, c->dim, c->dim, 1);
        add_tensor(tb, K_FFN_NORM, l, c->dim, 1, 0);
        add_tensor(tb, K_W1, l, c->hidden_dim, c->dim, 1);
        add_tensor(tb, K_W2, l, c->dim, c->hidden_dim, 1);
        add_tensor(tb, K_W3, l, c->hidden_dim, c->dim, 1);
    }
    add_tensor(tb, K_NORM, -1, c->dim, 1, 0);
    if (!c->tied) add_tensor(tb, K_OUT, -1, c->vocab_size, c->dim, 1);
}

int runc_train_open(runc_trainer **out, const runc_train_config *config, runc_error *err)
{
    runc_trainer probe, *t;
    carver cv = {NULL, 0, 0};
    int status, s, j, bad = 0;
    size_t L, D, KV, H, V, per_layer, need;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_train_open: trainer is NULL");
    *out = NULL;
    if (!config) return runc_set_error(err, RUNC_E_ARG, "runc_train_open: config is NULL");
    status = check_config(config, err);
    if (status) return status;
    memset(&probe, 0, sizeof probe);
    probe.c = *config;
    probe.hd = config->dim / config->n_heads;
    probe.kv_dim = config->n_kv_heads * probe.hd;
    probe.rep = config->n_heads / config->n_kv_heads;
    L = (size_t)config->n_layers;
    D = (size_t)config->dim;
    KV = (size_t)probe.kv_dim;
    H = (size_t)config->hidden_dim;
    V = (size_t)config->vocab_size;
    per_layer = 2 * D + 2 * D * D + 2 * D * KV + 3 * D * H;
    (void)V;
    if (mul3(L, per_layer, 1, &bad), bad || mul3(V, D, 2, &bad) == 0 || bad)
        return runc_set_error(err, RUNC_E_OVERFLOW, "train config: the model's size overflows");
    {
        table tb = {NULL, 0, 0, 0, 0};
        build_tensors(config, probe.kv_dim, &tb);
        probe.n_tensors = tb.n;
        probe.n_params = tb.off;
        probe.n_wt = tb.wt;
        probe.n_wp = tb.wp;
    }
    probe.Dp = round8(config->dim);
    probe.KVp = round8(probe.kv_dim);
    probe.Hp = round8(config->hidden_dim);
    probe.Vp = round8(config->vocab_size);
    probe.max_tok = mul3((size_t)config->max_batch, (size_t)config->max_seq_len, 1, &bad);
    probe.hdp = round8(probe.hd);
    probe.Sp = round8(config->max_seq_len);
    {
        /* a row of n positions keeps, per layer and head, round8(p + 1) probabilities for its
         * position p: tri(n) = sum of round8(p) over p = 1..n */
        size_t tri = 0, S = (size_t)config->max_seq_len, Sp = (size_t)probe.Sp, hdp = (size_t)probe.hdp;
        size_t hd = (size_t)probe.hd, fixed;
        int p;
        for (p = 1; p <= config->max_seq_len; p++) tri += (size_t)round8(p);
        probe.max_prob = mul3((size_t)config->max_batch, (size_t)config->n_heads, tri, &bad);
        /* a worker's attention scratch (att_scratch): K^T and V^T (hd x Sp), K, V, Q, dY, dK, dV
         * (Sp x hdp), a spare row (Sp), 8 output rows (hdp), one head's score gradients (tri) */
        fixed = mul3(2, hd, Sp, &bad) + mul3(6, Sp, hdp, &bad) + Sp + 8 * hdp;
        if (tri > SIZE_MAX - fixed) bad = 1;
        probe.scratch_n = fixed + tri;
        (void)S;
    }
    if (bad) return runc_set_error(err, RUNC_E_OVERFLOW, "train config: max_batch x max_seq_len overflows");
    lay_out(&probe, &cv);
    if (cv.bad) return runc_set_error(err, RUNC_E_OVERFLOW, "train config: the arena's size overflows");
    need = cv.used + 64;
    t = (runc_trainer *)calloc(1, sizeof *t);
    if (!t) return runc_set_error(err, RUNC_E_NOMEM, "runc_train_open: out of memory");
    *t = probe;
    t->arena = (unsigned char *)calloc(1, need);
    if (!t->arena) {
        free(t);
        return runc_set_error(err, RUNC_E_NOMEM, "runc_train_open: cannot allocate the arena (%.1f MB for max_batch %d)",
                         (double)need / 1e6, config->max_batch);
    }
    cv.base = (unsigned char *)(((uintptr_t)t->arena + 63u) & ~(uintptr_t)63u);
    cv.used = 0;
    lay_out(t, &cv);
    t->arena_bytes = need;
    {
        table tb = {NULL, 0, 0, 0, 0};
        tb.tab = t->tensors;
        build_tensors(config, t->kv_dim, &tb);
    }
    t->emb = t->tensors[0].off;
    t->norm_index = 1 + 9 * config->n_layers;
    t->norm = t->tensors[t->norm_index].off;
    t->out_index = config->tied ? 0 : t->norm_index + 1;
    t->run_rows = run_rows_portable;
    t->kernels = "portable C";
#if TK_HAVE_AVX2
    if (config->kernels != RUNC_KERNELS_PORTABLE && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        t->run_rows = run_rows_avx2;
        t->kernels = "avx2";
        if (config->kernels == RUNC_KERNELS_AUTO && __builtin_cpu_supports("avx512f")) {
            t->run_rows = run_rows_avx512;
            t->kernels = "avx512";
        }
    }
#endif
    t->tri_off[0] = 0;
    for (s = 0; s < config->max_seq_len; s++) t->tri_off[s + 1] = t->tri_off[s] + (size_t)round8(s + 1);
    /* RoPE tables as train/model.py's rope_tables computes them in float32, laid out for rope */
    for (s = 0; s < config->max_seq_len; s++) {
        float *cs = t->rope_cos + (size_t)s * (size_t)t->Dp, *sn = t->rope_sin + (size_t)s * (size_t)t->Dp;
        memset(cs, 0, (size_t)t->Dp * sizeof(float));
        memset(sn, 0, (size_t)t->Dp * sizeof(float));
        for (j = 0; j < t->hd / 2; j++) {
            const float e = (float)(2 * j) / (float)t->hd;
            const float freq = 1.0f / powf(config->rope_theta, e);
            const float angle = (float)s * freq, c = cosf(angle), si = sinf(angle);
            int h;
            for (h = 0; h < config->n_heads; h++) {
                cs[h * t->hd + 2 * j] = cs[h * t->hd + 2 * j + 1] = c;
                sn[h * t->hd + 2 * j] = -si;
                sn[h * t->hd + 2 * j + 1] = si;
            }
        }
    }
    *out = t;
    return runc_set_ok(err);
}

void runc_train_close(runc_trainer *t)
{
    if (!t) return;
    free(t->arena);
    free(t);
}

long long runc_train_n_params(const runc_trainer *t) { return t ? (long long)t->n_params : 0; }
long long runc_train_arena_bytes(const runc_trainer *t) { return t ? (long long)t->arena_bytes : 0; }
int runc_train_n_tensors(const runc_trainer *t) { return t ? t->n_tensors : 0; }
const char *runc_train_kernels(const runc_trainer *t) { return t ? t->kernels : ""; }
long long runc_train_adam_steps(const runc_trainer *t) { return t ? t->adam_steps : 0; }

void runc_train_set_adam_steps(runc_trainer *t, long long steps)
{
    if (t) t->adam_steps = steps < 0 ? 0 : steps;
}

int runc_train_tensor(const runc_trainer *t, int index, char *name, int name_cap, long long *offset, int *rows,
                      int *cols, int *decay, runc_error *err)
{
    const tensor *e;
    if (!t) return runc_set_error(err, RUNC_E_ARG, "runc_train_tensor: trainer is NULL");
    if (index < 0 || index >= t->n_tensors)
        return runc_set_error(err, RUNC_E_ARG, "runc_train_tensor: index %d outside 0..%d", index, t->n_tensors - 1);
    e = &t->tensors[index];
    if (name && name_cap > 0) {
        if (e->layer >= 0) snprintf(name, (size_t)name_cap, "layers.%d.%s", e->layer, kind_names[e->kind]);
        else snprintf(name, (size_t)name_cap, "%s", kind_names[e->kind]);
    }
    if (offset) *offset = (long long)e->off;
    if (rows) *rows = e->rows;
    if (cols) *cols = e->cols;
    if (decay) *decay = e->decay;
    return runc_set_ok(err);
}

float *runc_train_buffer(runc_trainer *t, int which)
{
    if (!t) return NULL;
    switch (which) {
    case RUNC_TRAIN_PARAMS: return t->params;
    case RUNC_TRAIN_GRADS: return t->grads;
    case RUNC_TRAIN_ADAM_M: return t->m;
    case RUNC_TRAIN_ADAM_V: return t->v;
    default: return NULL;
    }
}

#ifndef RUNC_NO_THREADS
static void *run_rows_thread(void *arg)
{
    worker *w = (worker *)arg;
    (void)flush_subnormals(); /* this thread's own mode, for its life (one step) */
    w->t->run_rows(w);
    return NULL;
}
#endif

/* ---- the batch ---------------------------------------------------------------- */

static int load_batch(runc_trainer *t, const int *tokens, const int *targets, int B, int W, runc_error *err)
{
    const runc_train_config *c = &t->c;
    const int V = c->vocab_size, nh = c->n_heads;
    int r, p, n = 0, s = 0;
    size_t po = 0;
    if (!tokens || !targets) return runc_set_error(err, RUNC_E_ARG, "train batch: tokens or targets is NULL");
    if (B <= 0 || W <= 0) return runc_set_error(err, RUNC_E_ARG, "train batch: %d x %d is empty", B, W);
    if (B > c->max_batch)
        return runc_set_error(err, RUNC_E_BUFFER, "train batch: %d rows do not fit the arena (max_batch %d)", B,
                         c->max_batch);
    if (W > c->max_seq_len)
        return runc_set_error(err, RUNC_E_CONTEXT, "train batch: width %d exceeds max_seq_len %d", W, c->max_seq_len);
    for (r = 0; r < B; r++) {
        const int *tr = tokens + (size_t)r * (size_t)W, *gr = targets + (size_t)r * (size_t)W;
        int last = -1;
        for (p = 0; p < W; p++) {
            if (tr[p] < 0 || tr[p] >= V)
                return runc_set_error(err, RUNC_E_ARG, "train batch: token %d at row %d, position %d is outside the "
                                 "vocabulary (0..%d)", tr[p], r, p, V - 1);
            if (gr[p] != RUNC_TRAIN_IGNORE) {
                if (gr[p] < 0 || gr[p] >= V)
                    return runc_set_error(err, RUNC_E_ARG, "train batch: target %d at row %d, position %d is outside "
                                     "the vocabulary (0..%d) and not the ignore index %d", gr[p], r, p, V - 1,
                                     RUNC_TRAIN_IGNORE);
                last = p;
            }
        }
        t->row_tok[r] = n;
        t->row_sel[r] = s;
        for (p = 0; p <= last; p++) {
            t->tok[n] = tr[p];
            t->pos[n] = p;
            t->prob_off[n] = po;
            po += (size_t)nh * (size_t)round8(p + 1);
            if (gr[p] != RUNC_TRAIN_IGNORE) {
                t->sel_tok[s] = n;
                t->sel_tgt[s] = gr[p];
                s++;
            }
            n++;
        }
    }
    t->row_tok[B] = n;
    t->row_sel[B] = s;
    t->n_rows = B;
    t->n_sel = s;
    if (s == 0) return runc_set_error(err, RUNC_E_ARG, "train batch: no answer tokens (every target is the ignore index)");
    return RUNC_OK;
}

/* The padded copies of every matrix W (rows x cols) the products read: W^T with
 * rows of round8(rows) floats (the forward pass: x W^T), and W with rows of
 * round8(cols) (the backward pass: dy W). Padding stays zero. */
static void copy_weights(runc_trainer *t)
{
    int e, r, c;
    for (e = 0; e < t->n_tensors; e++) {
        const tensor *te = &t->tensors[e];
        const float *w = t->params + te->off;
        const int rp = round8(te->rows), cp = round8(te->cols);
        float *wt = t->wt + te->wt_off, *wp = t->wp + te->wp_off;
        if (te->cols == 1) continue;
        for (r = 0; r < te->rows; r++) {
            const float *wr = w + (size_t)r * (size_t)te->cols;
            memcpy(wp + (size_t)r * (size_t)cp, wr, (size_t)te->cols * sizeof(float));
            for (c = 0; c < te->cols; c++) wt[(size_t)c * (size_t)rp + (size_t)r] = wr[c];
        }
    }
}

static int forward_backward(runc_trainer *t, const int *tokens, const int *targets, int batch, int width,
                            float *logits, long long logits_cap, runc_train_stats *stats, runc_error *err)
{
    int status, i, T, r;
    long long total;
    double loss = 0.0;
    if (!t) return runc_set_error(err, RUNC_E_ARG, "runc_train_forward_backward: trainer is NULL");
    status = load_batch(t, tokens, targets, batch, width, err);
    if (status) return status;
    total = (long long)t->row_tok[batch];
    if (logits && logits_cap < (long long)t->n_sel * t->c.vocab_size)
        return runc_set_error(err, RUNC_E_BUFFER, "runc_train_forward_backward: logits needs %lld floats, got %lld",
                         (long long)t->n_sel * t->c.vocab_size, logits_cap);
    copy_weights(t);
    /* rows to workers, balanced by positions */
    T = t->c.threads;
    r = 0;
    for (i = 0; i < T; i++) {
        worker *w = &t->workers[i];
        const long long goal = total * (i + 1) / T;
        w->t = t;
        w->r0 = r;
        while (r < batch && (i == T - 1 || t->row_tok[r + 1] <= goal)) r++;
        w->r1 = r;
        w->n0 = t->row_tok[w->r0];
        w->n1 = t->row_tok[w->r1];
        w->s0 = t->row_sel[w->r0];
        w->s1 = t->row_sel[w->r1];
        w->grad = i == 0 ? t->grads : t->wgrads + (size_t)(i - 1) * t->n_params;
        w->scratch = t->scratch + (size_t)i * t->scratch_n;
        w->ffn = t->ffn + (size_t)i * RUNC_TRAIN_CHUNK * (size_t)t->Hp;
        w->rows = t->rows + (size_t)i * (size_t)t->c.max_seq_len;
    }
#ifndef RUNC_NO_THREADS
    if (T > 1) {
        pthread_t th[256];
        int started[256];
        for (i = 1; i < T; i++) started[i] = pthread_create(&th[i], NULL, run_rows_thread, &t->workers[i]) == 0;
        t->run_rows(&t->workers[0]);
        for (i = 1; i < T; i++) {
            if (started[i]) pthread_join(th[i], NULL);
            else t->run_rows(&t->workers[i]);  /* no thread to be had: do its share here */
        }
    } else
#endif
    {
        for (i = 0; i < T; i++) t->run_rows(&t->workers[i]);
    }
    for (i = 0; i < T; i++) loss += t->workers[i].loss;
    for (i = 1; i < T; i++) {
        const float *restrict g = t->workers[i].grad;
        float *restrict o = t->grads;
        size_t j;
        for (j = 0; j < t->n_params; j++) o[j] += g[j];
    }
    if (logits)
        for (i = 0; i < t->n_sel; i++)
            memcpy(logits + (size_t)i * (size_t)t->c.vocab_size, t->logits + (size_t)i * (size_t)t->Vp,
                   (size_t)t->c.vocab_size * sizeof(float));
    if (stats) {
        stats->loss_sum = loss;
        stats->n_answer = t->n_sel;
        stats->n_computed = (int)total;
        stats->grad_norm = 0.0;
    }
    if (!isfinite(loss))
        return runc_set_error(err, RUNC_E_WEIGHT, "train step: the loss is not finite (%g)", loss);
    return runc_set_ok(err);
}

/* ---- optimizer ---------------------------------------------------------------- */

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

static int update(runc_trainer *t, double lr, runc_train_stats *stats, runc_error *err)
{
    const runc_train_config *c;
    double ss = 0.0, norm, bc1, bc2;
    size_t j;
    int e;
    float b1w, b2, b2w, bc2s, eps, step;
    if (!t) return runc_set_error(err, RUNC_E_ARG, "runc_train_update: trainer is NULL");
    c = &t->c;
    if (!(lr >= 0.0) || !isfinite(lr)) return runc_set_error(err, RUNC_E_ARG, "train step: lr must be >= 0, got %g", lr);
    for (j = 0; j < t->n_params; j++) ss += (double)t->grads[j] * (double)t->grads[j];
    norm = sqrt(ss);
    if (stats) stats->grad_norm = norm;
    if (!isfinite(norm))
        return runc_set_error(err, RUNC_E_WEIGHT, "train step: the gradient norm is not finite (%g)", norm);
    if (c->grad_clip > 0.0) {
        float coef = (float)c->grad_clip / ((float)norm + 1e-6f);
        if (coef < 1.0f)
            for (j = 0; j < t->n_params; j++) t->grads[j] *= coef;
    }
    t->adam_steps++;
    bc1 = 1.0 - pow(c->beta1, (double)t->adam_steps);
    bc2 = 1.0 - pow(c->beta2, (double)t->adam_steps);
    b1w = (float)(1.0 - c->beta1);
    b2 = (float)c->beta2;
    b2w = (float)(1.0 - c->beta2);
    bc2s = (float)sqrt(bc2);
    eps = (float)c->adam_eps;
    step = (float)(-lr / bc1);
    for (e = 0; e < t->n_tensors; e++) {
        const tensor *te = &t->tensors[e];
        const size_t n = (size_t)te->rows * (size_t)te->cols;
        float *restrict p = t->params + te->off;
        float *restrict m = t->m + te->off;
        float *restrict v = t->v + te->off;
        const float *restrict g = t->grads + te->off;
        if (te->decay && c->weight_decay != 0.0) {
            const float keep = (float)(1.0 - lr * c->weight_decay);
            for (j = 0; j < n; j++) p[j] *= keep;
        }
        adamw_update(p, m, v, g, n, b1w, b2, b2w, bc2s, eps, step);
    }
    return runc_set_ok(err);
}

/* ---- entry points: subnormals flushed while they run ------------------------------ */

int runc_train_forward_backward(runc_trainer *t, const int *tokens, const int *targets, int batch, int width,
                                float *logits, long long logits_cap, runc_train_stats *stats, runc_error *err)
{
    const fp_mode mode = flush_subnormals();
    const int status = forward_backward(t, tokens, targets, batch, width, logits, logits_cap, stats, err);
    restore_fp_mode(mode);
    return status;
}

int runc_train_update(runc_trainer *t, double lr, runc_train_stats *stats, runc_error *err)
{
    const fp_mode mode = flush_subnormals();
    const int status = update(t, lr, stats, err);
    restore_fp_mode(mode);
    return status;
}

int runc_train_step(runc_trainer *t, const int *tokens, const int *targets, int batch, int width, double lr,
                    runc_train_stats *stats, runc_error *err)
{
    int status = runc_train_forward_backward(t, tokens, targets, batch, width, NULL, 0, stats, err);
    if (status) return status;
    return runc_train_update(t, lr, stats, err);
}
