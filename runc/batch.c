/*
 * batch.c - TinyMath's batch engine (see runc.h, "the batch engine").
 *
 * Many problems in flight: each worker thread owns a fixed set of slots (one
 * sequence each) and, step after step, advances every active slot by one
 * token (a prompt token or a generated one) with matrix-matrix products over
 * all of its rows, so that each weight is read once per step for all of them.
 * A slot whose answer is finished is refilled from the shared queue before
 * the next step (continuous batching); prompts of any length mix freely.
 * A new problem copies the keys and values of the first tokens it shares
 * with what some slot of its worker has run, instead of running them
 * (rb_reuse_prefix), and a prompt token stops in the last layer once its
 * keys and values are stored (see step in batch_kernels.c.inc).
 *
 * Workers share nothing but the read-only packed weights and the queue index
 * (a mutex): no barrier per step, no allocation after runc_batch_open (all
 * KV caches and activations live in one arena, weights in another, both
 * 64-byte aligned). The compute kernels are batch_kernels.c.inc, whose text
 * is included here once portably and, on x86-64 with GCC or clang, once more
 * per instruction set (AVX2, AVX-512VL), picked at open by the CPU's features.
 *
 * Greedy answers are identical to runc_solve's: the kernels repeat runc.c's
 * arithmetic exactly (see batch_kernels.c.inc), so every logit is equal bit
 * for bit (test_batch checks the confidences, which rest on every logit, that
 * way).
 *
 * Attention runs across kv heads as vector lanes (attend), or, for models
 * whose kv heads are not a multiple of 8, across 8 slots as lanes
 * (attend_lanes): at 2 heads the first would leave 6 of 8 lanes idle, and
 * attention was half the time of a 7K-parameter model.
 *
 * No global state, no printing, no exit(): errors are status codes and
 * messages, as in runc.c.
 */
#if defined(__unix__) || defined(__APPLE__)
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <unistd.h>
#endif

#include "runc_impl.h"

/* The same answers on every machine (as runc.c): no fused multiply-add. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_POSIX_THREADS) && _POSIX_THREADS > 0 && !defined(RUNC_NO_THREADS)
#include <pthread.h>
#define RB_THREADS 1
#else
#define RB_THREADS 0
#endif

/* GNU C vector types for the matrix kernels (GCC, clang); plain loops elsewhere. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(RUNC_NO_VECTOR_EXT)
#define RB_VEC 1
typedef float rb_v8 __attribute__((vector_size(32)));
typedef float rb_v4 __attribute__((vector_size(16)));
typedef unsigned int rb_v8u __attribute__((vector_size(32)));
typedef int rb_v8i __attribute__((vector_size(32)));
typedef unsigned char rb_v8b __attribute__((vector_size(8)));
#define RB_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__clang__) || __GNUC__ >= 12
#define RB_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define RB_SHUF(a, b, ...) __builtin_shuffle(a, b, (rb_v8i){__VA_ARGS__})
#endif
/* Eight accumulators of eight lanes -> their eight sums, in order, each
 * ((a0+a4)+(a1+a5))+((a2+a6)+(a3+a7)) of its own lanes (runc.c's order). A
 * macro: vectors never cross a call (the portable variant has no AVX ABI). */
#define RB_REDUCE8(out, a, b, c, d, e, f, g, h)                                                              \
    do {                                                                                                      \
        /* [x_lo, y_lo] + [x_hi, y_hi]: lanes k and k+4 of x in the low half, of y in the high */             \
        rb_v8 rb_ae = RB_SHUF(a, e, 0, 1, 2, 3, 8, 9, 10, 11) + RB_SHUF(a, e, 4, 5, 6, 7, 12, 13, 14, 15);  \
        rb_v8 rb_bf = RB_SHUF(b, f, 0, 1, 2, 3, 8, 9, 10, 11) + RB_SHUF(b, f, 4, 5, 6, 7, 12, 13, 14, 15);  \
        rb_v8 rb_cg = RB_SHUF(c, g, 0, 1, 2, 3, 8, 9, 10, 11) + RB_SHUF(c, g, 4, 5, 6, 7, 12, 13, 14, 15);  \
        rb_v8 rb_dh = RB_SHUF(d, h, 0, 1, 2, 3, 8, 9, 10, 11) + RB_SHUF(d, h, 4, 5, 6, 7, 12, 13, 14, 15);  \
        /* pairwise within 128-bit halves: (t0+t1), (t2+t3) */                                                \
        rb_v8 rb_p = RB_SHUF(rb_ae, rb_bf, 0, 2, 8, 10, 4, 6, 12, 14) +                                        \
                     RB_SHUF(rb_ae, rb_bf, 1, 3, 9, 11, 5, 7, 13, 15);                                         \
        rb_v8 rb_q = RB_SHUF(rb_cg, rb_dh, 0, 2, 8, 10, 4, 6, 12, 14) +                                        \
                     RB_SHUF(rb_cg, rb_dh, 1, 3, 9, 11, 5, 7, 13, 15);                                         \
        (out) = RB_SHUF(rb_p, rb_q, 0, 2, 8, 10, 4, 6, 12, 14) + RB_SHUF(rb_p, rb_q, 1, 3, 9, 11, 5, 7, 13, 15); \
    } while (0)
#else
#define RB_VEC 0
#define RB_ALWAYS_INLINE
#endif

/* x86-64 with GCC/clang: AVX2 and AVX-512VL copies of the kernels, used when
 * the CPU has them (a -march=native build compiles them in instead). */
#if RB_VEC && (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX2__) && !defined(RUNC_NO_DISPATCH)
#define RB_DISPATCH_X86 1
#else
#define RB_DISPATCH_X86 0
#endif

#define RB_CAT2(a, b) a##b
#define RB_CAT(a, b) RB_CAT2(a, b)
#define RB_ALIGN 64

/* ========================================================================== */
/* types                                                                       */
/* ========================================================================== */

/* A weight matrix packed for the kernels.
 * int8 with VNNI (b->vnni): the values stay int8, wi[((cb * n / 4) + j / 4) * 32 + lane * 4 + j % 4] =
 *       W[cb*8 + lane][j], for vpdpbusd's sums of 4 products; winit the offset correction.
 * fp32: w holds d rows of n floats at `stride` (a multiple of 16: aligned rows);
 *       tail the last n % 8 columns of each group of 4 rows transposed,
 *       tail[((c / 4) * (n % 8) + jj) * 4 + c % 4] = W[c][n / 8 * 8 + jj];
 *       with the AVX-512 kernels (b->z16) also wz, the first n / 8 * 8 columns
 *       of each group of 4 rows by 8 columns, wz[(c / 4) * 4 * n8 + (j / 8) * 32
 *       + (c % 4) * 8 + j % 8] = W[c][j] (n8 = n / 8 * 8), for tile_8x4z.
 * int8: w holds the values as floats in blocks of 8 outputs, j-major, and s
 *       the group scales likewise (see gemm_q8); dpad = d rounded up to 16. */
typedef struct {
    float *w, *s, *tail;
    float *wz;       /* fp32 for the AVX-512 tile (b->z16), or NULL: see rb_pack */
    int8_t *wi;      /* int8 for VNNI: per block of 8 outputs, per 4 inputs: 8 x 4 bytes */
    int32_t *winit;  /* -128 x each output's group sum (the u8 activations' offset), per block */
    int n, d, stride, dpad;
} rb_mat;

typedef struct {
    rb_mat qkv;  /* wq, wk, wv stacked: dim + 2 kv_dim outputs */
    rb_mat wo;   /* dim outputs */
    rb_mat w13;  /* w1, w3 stacked: 2 hidden_dim outputs */
    rb_mat w2;   /* dim outputs from hidden_dim inputs */
} rb_layer;

typedef struct rb_worker rb_worker;

struct runc_batch {
    const runc_model *model;
    const runc_tokenizer *tok;
    int threads, slots, context, q8, gs;
    int max_answer;      /* tokens an answer may generate */
    int vnni;            /* int8 products by VNNI (vpdpbusd): AVX-512 kernels, group size a multiple of 4 */
    int z16;             /* fp32 with the AVX-512 kernels: gemm_f32's 16-float tile (weights also in wz) */
    int D, H, KV, hs, nh, nkv, V, L;
    int gp;              /* kv heads padded to a multiple of 8: the attention's vector lanes */
    int lanes;           /* attention with slots, not kv heads, as the lanes (attend_lanes) */
    /* row strides (floats) of the activation matrices, multiples of 16 */
    int sD, sH, sQKV, s13, sV, sX, gX;
    size_t kv_slot;      /* floats of one slot's KV cache (all layers) */
    float att_scale;
    rb_layer *layers;
    rb_mat cls;
    float *rope_cos, *rope_sin; /* (context, head_size/2) */
    float *rope_cx, *rope_sx;   /* (context, head_size): (cos, cos) and (-sin, sin) per pair */
    void *wmem, *amem;          /* the weight and activation arenas (malloc'd, unaligned base) */
    size_t wbytes, abytes;
    rb_worker *workers;
    void (*step)(const runc_batch *, rb_worker *, int, int);
    const char *kernels;
    size_t scratch_cap;         /* ints of each worker's encoding scratch */
    /* the call in progress */
    const char *const *prompts;
    int n;
    char *answers;
    size_t answer_cap;
    int *n_generated;
    float *mean_lp, *min_lp;
    runc_error *prompt_errors;
    int next;                   /* next problem to take */
    long long tokens;           /* tokens run by the last call */
#if RB_THREADS
    pthread_mutex_t lock;
    int lock_ok;
#endif
};

struct rb_worker {
    runc_batch *b;
    int id, nslots, fill;
    int drained;                 /* the shared queue gave this worker nothing: stop asking */
    /* per slot: problem index (-1 free), position of the token to feed, the
     * token, prompt length, tokens generated; ids = prompt then answer */
    int *slot_prob, *slot_pos, *slot_tok, *slot_np, *slot_ngen, *ids;
    int *slot_kvn;               /* per slot: positions 0..kvn-1 of its cache hold the keys and values of ids' tokens */
    unsigned char *slot_new;     /* per slot: took its problem in this refill */
    float *slot_lpsum, *slot_lpmin;
    int *row_slot, *row_tok, *row_pos, *lrow, *scratch;
    unsigned char *row_out;      /* per row: its logits are wanted (the row is in lrow) */
    float *x, *xb, *xb2, *qkv, *h13, *hb, *logits, *lp, *tmpv, *att, *qt, *xq, *xsc, *qdiv, *kv;
    uint32_t *qab;
    uint8_t *xu;         /* VNNI: quantized activations + 128, as bytes (rows of sX) */
    int want_lp;
    /* results of the call */
    long long tokens;
    int err_code, err_index;
    char err_msg[256];
};

/* the KV cache of one slot and layer (kv heads as lanes; attend_lanes has its own layout) */
static float *rb_slot_kv(const runc_batch *b, const rb_worker *w, int slot, int layer)
{
    return w->kv + ((size_t)slot * (size_t)b->L + (size_t)layer) * (2 * (size_t)b->context * (size_t)b->hs * (size_t)b->gp);
}

/* ========================================================================== */
/* kernels: portable, and AVX2 where the CPU has it                           */
/* ========================================================================== */

/* The portable kernels use the vector types only where the base instruction
 * set has 8-float registers (a -march=native build on x86 with AVX): lowered
 * to pairs of 4-float registers (SSE2, NEON) they spill, and the plain loops
 * are faster. */
#define RB_SUFFIX _c
#define RB_ATTR
#if RB_VEC && defined(__AVX__)
#define RB_KVEC 1
#include <immintrin.h>
#else
#define RB_KVEC 0
#endif
/* a -march=native build: the base instruction set may already have what the
 * x86 variants add (FMA, 32 registers, VNNI) */
#if RB_KVEC && defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define RB_FMA(a, b, c) ((rb_v8)_mm256_fmadd_ps((a), (b), (c)))
#else
#define RB_FMA(a, b, c) ((a) * (b) + (c)) /* used on exact integer sums only: fused or not, the same */
#endif
#if RB_KVEC && defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__FMA__)
#define RB_HAS_VNNI 1
#define RB_NATIVE_VNNI 1
#endif
#if RB_KVEC && defined(__AVX512VL__)
#define RB_TILE_ROWS 4
#define RB_Q8_ROWS 4
#define RB_Z16 1
#else
#define RB_TILE_ROWS 2
#define RB_Q8_ROWS 1
#endif
#include "batch_kernels.c.inc"
#if RB_KVEC
#define RB_C_LANES 1 /* step_c has attend_lanes */
#else
#define RB_C_LANES 0
#endif
#ifdef RB_Z16
#define RB_C_Z16 1 /* step_c has tile_8x4z */
#undef RB_Z16
#else
#define RB_C_Z16 0
#endif
#undef RB_SUFFIX
#undef RB_ATTR
#undef RB_TILE_ROWS
#undef RB_Q8_ROWS
#undef RB_KVEC
#undef RB_FMA
#undef RB_HAS_VNNI

#if RB_DISPATCH_X86
/* the fused multiply-add of the int8 kernel's exact integer sums (nothing
 * else is fused: the file is ISO C, where compilers do not contract a*b+c) */
#include <immintrin.h>
#define RB_FMA(a, b, c) ((rb_v8)_mm256_fmadd_ps((a), (b), (c)))

#define RB_SUFFIX _avx2
#define RB_KVEC 1
#define RB_ATTR __attribute__((target("avx2,fma")))
#define RB_TILE_ROWS 3
#define RB_Q8_ROWS 2
#include "batch_kernels.c.inc"
#undef RB_SUFFIX
#undef RB_ATTR
#undef RB_TILE_ROWS
#undef RB_Q8_ROWS
#undef RB_KVEC

/* AVX-512VL: the same 8-float vectors, with 32 registers (a taller tile), and
 * VNNI's vpdpbusd for int8 products */
#define RB_SUFFIX _avx512
#define RB_KVEC 1
#define RB_HAS_VNNI 1
#define RB_ATTR __attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))
#define RB_Z16 1 /* the 16-float tile of gemm_f32 */
#define RB_TILE_ROWS 4
#define RB_Q8_ROWS 4
#include "batch_kernels.c.inc"
#undef RB_SUFFIX
#undef RB_ATTR
#undef RB_TILE_ROWS
#undef RB_Q8_ROWS
#undef RB_KVEC
#undef RB_FMA
#undef RB_HAS_VNNI
#undef RB_Z16
#endif

/* ========================================================================== */
/* errors and sizes                                                            */
/* ========================================================================== */

static int rup(int n, int m)
{
    return (n + m - 1) / m * m;
}

/* A bump allocator over one block: first a dry run that sums the sizes
 * (checked), then the real one that hands out 64-byte aligned pieces. */
typedef struct {
    unsigned char *base;
    size_t used, limit;
    int overflow;
} rb_bump;

static void *rb_take(rb_bump *a, size_t count, size_t size)
{
    size_t bytes, start;
    if (a->overflow) return NULL;
    if (size != 0 && count > (SIZE_MAX / 4) / size) {
        a->overflow = 1;
        return NULL;
    }
    bytes = count * size;
    start = (a->used + (RB_ALIGN - 1)) / RB_ALIGN * RB_ALIGN;
    if (start > SIZE_MAX / 4 - bytes) {
        a->overflow = 1;
        return NULL;
    }
    a->used = start + bytes;
    return a->base ? (void *)(a->base + start) : NULL;
}

/* malloc'd block whose first 64-byte boundary starts `bytes` usable bytes. */
static void *rb_alloc(size_t bytes, void **raw)
{
    unsigned char *p;
    *raw = NULL;
    if (bytes > SIZE_MAX - RB_ALIGN) return NULL;
    *raw = calloc(1, bytes + RB_ALIGN);
    if (!*raw) return NULL;
    p = (unsigned char *)*raw;
    return p + (RB_ALIGN - (uintptr_t)p % RB_ALIGN) % RB_ALIGN;
}

/* ========================================================================== */
/* packing the weights                                                         */
/* ========================================================================== */

/* Lay out (dry run when a->base is NULL) or fill one packed matrix made of
 * `parts` source matrices stacked by outputs (rows), each rows_i x n. */
static void rb_pack(rb_bump *a, const runc_batch *b, rb_mat *dst, const runc_mat *const *src, const int *rows,
                    int parts, int n)
{
    int d = 0, i, r, j;
    for (i = 0; i < parts; i++) d += rows[i];
    dst->n = n;
    dst->d = d;
    if (!b->q8) {
        dst->stride = rup(n, 16);
        dst->dpad = d;
        const int n8 = n / 8 * 8, tl = n - n8;
        dst->w = (float *)rb_take(a, (size_t)d * (size_t)dst->stride, sizeof(float));
        dst->tail = (float *)rb_take(a, (size_t)(d / 4 * 4) * (size_t)tl, sizeof(float));
        dst->wz = b->z16 ? (float *)rb_take(a, (size_t)(d / 4 * 4) * (size_t)n8, sizeof(float)) : NULL;
        dst->s = NULL;
        if (a->base && dst->w && dst->tail) {
            int row = 0;
            for (i = 0; i < parts; i++)
                for (r = 0; r < rows[i]; r++, row++) {
                    const float *f = src[i]->f + (size_t)r * (size_t)n;
                    memcpy(dst->w + (size_t)row * (size_t)dst->stride, f, (size_t)n * sizeof(float));
                    if (row < d / 4 * 4)
                        for (j = 0; j < tl; j++)
                            dst->tail[((size_t)(row / 4) * (size_t)tl + (size_t)j) * 4 + (size_t)(row % 4)] = f[n8 + j];
                    if (dst->wz && row < d / 4 * 4)
                        for (j = 0; j < n8; j++)
                            dst->wz[(size_t)(row / 4) * 4 * (size_t)n8 + (size_t)(j / 8) * 32 + (size_t)(row % 4) * 8 +
                                    (size_t)(j % 8)] = f[j];
                }
        }
    } else {
        const int gs = b->gs, groups = n / gs;
        dst->stride = n;
        dst->dpad = rup(d, 16);
        dst->s = (float *)rb_take(a, (size_t)dst->dpad * (size_t)groups, sizeof(float));
        if (b->vnni) {
            dst->wi = (int8_t *)rb_take(a, (size_t)dst->dpad * (size_t)n, 1);
            dst->winit = (int32_t *)rb_take(a, (size_t)dst->dpad * (size_t)groups, sizeof(int32_t));
            if (a->base && dst->wi && dst->winit && dst->s) {
                int row = 0;
                for (i = 0; i < parts; i++)
                    for (r = 0; r < rows[i]; r++, row++) {
                        const int8_t *q = src[i]->q + (size_t)r * (size_t)n;
                        const float *sc = src[i]->s + (size_t)r * (size_t)groups;
                        size_t cb = (size_t)(row / 8), lane = (size_t)(row % 8);
                        for (j = 0; j < n; j++)
                            dst->wi[(cb * (size_t)(n / 4) + (size_t)(j / 4)) * 32 + lane * 4 + (size_t)(j % 4)] = q[j];
                        for (j = 0; j < groups; j++) {
                            int32_t sum = 0;
                            int k;
                            for (k = 0; k < gs; k++) sum += q[(size_t)j * (size_t)gs + (size_t)k];
                            dst->winit[(cb * (size_t)groups + (size_t)j) * 8 + lane] = -128 * sum;
                            dst->s[(cb * (size_t)groups + (size_t)j) * 8 + lane] = sc[j];
                        }
                    }
            }
            return;
        }
        dst->w = (float *)rb_take(a, (size_t)dst->dpad * (size_t)n, sizeof(float));
        if (a->base && dst->w && dst->s) {
            int row = 0;
            for (i = 0; i < parts; i++)
                for (r = 0; r < rows[i]; r++, row++) {
                    const int8_t *q = src[i]->q + (size_t)r * (size_t)n;
                    const float *s = src[i]->s + (size_t)r * (size_t)groups;
                    size_t cb = (size_t)(row / 8), lane = (size_t)(row % 8);
                    for (j = 0; j < n; j++) dst->w[(cb * (size_t)n + (size_t)j) * 8 + lane] = (float)q[j];
                    for (j = 0; j < groups; j++) dst->s[(cb * (size_t)groups + (size_t)j) * 8 + lane] = s[j];
                }
            /* padding outputs stay zero (calloc) */
        }
    }
}

static void rb_pack_all(rb_bump *a, runc_batch *b)
{
    const runc_model *m = b->model;
    int l;
    for (l = 0; l < b->L; l++) {
        rb_layer *ly = &b->layers[l];
        const runc_mat *qkv[3], *w13[2], *one[1];
        int rq[3], r13[2], r1[1];
        qkv[0] = &m->wq[l];
        qkv[1] = &m->wk[l];
        qkv[2] = &m->wv[l];
        rq[0] = b->D;
        rq[1] = rq[2] = b->KV;
        rb_pack(a, b, &ly->qkv, qkv, rq, 3, b->D);
        one[0] = &m->wo[l];
        r1[0] = b->D;
        rb_pack(a, b, &ly->wo, one, r1, 1, b->D);
        w13[0] = &m->w1[l];
        w13[1] = &m->w3[l];
        r13[0] = r13[1] = b->H;
        rb_pack(a, b, &ly->w13, w13, r13, 2, b->D);
        one[0] = &m->w2[l];
        rb_pack(a, b, &ly->w2, one, r1, 1, b->H);
    }
    {
        const runc_mat *one[1];
        int r1[1];
        one[0] = &m->cls;
        r1[0] = b->V;
        rb_pack(a, b, &b->cls, one, r1, 1, b->D);
    }
    b->rope_cos = (float *)rb_take(a, (size_t)b->context * (size_t)(b->hs / 2), sizeof(float));
    b->rope_sin = (float *)rb_take(a, (size_t)b->context * (size_t)(b->hs / 2), sizeof(float));
    b->rope_cx = (float *)rb_take(a, (size_t)b->context * (size_t)b->hs, sizeof(float));
    b->rope_sx = (float *)rb_take(a, (size_t)b->context * (size_t)b->hs, sizeof(float));
    if (a->base && b->rope_cos && b->rope_sin && b->rope_cx && b->rope_sx) {
        /* as runc_forward computes them for each position */
        int pos, i, half = b->hs / 2;
        for (pos = 0; pos < b->context; pos++)
            for (i = 0; i < half; i++) {
                float angle = (float)pos * m->rope_freq[i], c = cosf(angle), s = sinf(angle);
                size_t at = (size_t)pos * (size_t)b->hs + 2 * (size_t)i;
                b->rope_cos[(size_t)pos * (size_t)half + (size_t)i] = c;
                b->rope_sin[(size_t)pos * (size_t)half + (size_t)i] = s;
                b->rope_cx[at] = b->rope_cx[at + 1] = c;
                b->rope_sx[at] = -s;
                b->rope_sx[at + 1] = s;
            }
    }
}

/* Lay out (dry run when a->base is NULL) every worker's slots, KV cache and
 * activations in the activation arena. */
static void rb_layout_workers(rb_bump *a, runc_batch *b)
{
    int t;
    const size_t S = (size_t)b->slots, C = (size_t)b->context;
    for (t = 0; t < b->threads; t++) {
        rb_worker *w = &b->workers[t];
        w->b = b;
        w->id = t;
        w->nslots = b->slots;
        w->slot_prob = (int *)rb_take(a, S, sizeof(int));
        w->slot_pos = (int *)rb_take(a, S, sizeof(int));
        w->slot_tok = (int *)rb_take(a, S, sizeof(int));
        w->slot_np = (int *)rb_take(a, S, sizeof(int));
        w->slot_ngen = (int *)rb_take(a, S, sizeof(int));
        w->slot_kvn = (int *)rb_take(a, S, sizeof(int));
        w->slot_new = (unsigned char *)rb_take(a, S, 1);
        w->slot_lpsum = (float *)rb_take(a, S, sizeof(float));
        w->slot_lpmin = (float *)rb_take(a, S, sizeof(float));
        w->ids = (int *)rb_take(a, S * C, sizeof(int));
        w->row_slot = (int *)rb_take(a, S, sizeof(int));
        w->row_tok = (int *)rb_take(a, S, sizeof(int));
        w->row_pos = (int *)rb_take(a, S, sizeof(int));
        w->lrow = (int *)rb_take(a, S, sizeof(int));
        w->row_out = (unsigned char *)rb_take(a, S, 1);
        w->scratch = (int *)rb_take(a, b->scratch_cap, sizeof(int));
        w->x = (float *)rb_take(a, S * (size_t)b->sD, sizeof(float));
        w->xb = (float *)rb_take(a, S * (size_t)b->sD, sizeof(float));
        w->xb2 = (float *)rb_take(a, S * (size_t)b->sD, sizeof(float));
        w->qkv = (float *)rb_take(a, S * (size_t)b->sQKV, sizeof(float));
        w->h13 = (float *)rb_take(a, S * (size_t)b->s13, sizeof(float));
        w->hb = (float *)rb_take(a, S * (size_t)b->sH, sizeof(float));
        w->logits = (float *)rb_take(a, S * (size_t)b->sV, sizeof(float));
        w->lp = (float *)rb_take(a, S, sizeof(float));
        w->tmpv = (float *)rb_take(a, (size_t)b->sV, sizeof(float));
        w->att = (float *)rb_take(a, (size_t)b->context * (size_t)(b->nh / b->nkv) * (size_t)b->gp, sizeof(float));
        w->qt = (float *)rb_take(a, b->lanes ? (size_t)b->D * 8 : (size_t)b->hs * (size_t)(b->nh / b->nkv) * (size_t)b->gp,
                                 sizeof(float));
        if (b->q8 && !b->vnni) w->xq = (float *)rb_take(a, S * (size_t)b->sX, sizeof(float));
        if (b->q8) {
            w->xsc = (float *)rb_take(a, S * (size_t)b->gX, sizeof(float));
            w->qab = (uint32_t *)rb_take(a, (size_t)b->sX, sizeof(uint32_t));
            w->qdiv = (float *)rb_take(a, (size_t)b->sX, sizeof(float));
            if (b->vnni) w->xu = (uint8_t *)rb_take(a, S * (size_t)b->sX, 1);
        }
        w->kv = (float *)rb_take(a, b->lanes ? (S + 7) / 8 * 8 : S, b->kv_slot * sizeof(float));
    }
}

/* ========================================================================== */
/* open / close                                                                */
/* ========================================================================== */

#if RB_THREADS
static int rb_online_cpus(void)
{
#if defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n >= 1 && n <= RUNC_BATCH_MAX_THREADS) return (int)n;
    if (n > RUNC_BATCH_MAX_THREADS) return RUNC_BATCH_MAX_THREADS;
#endif
    return 1;
}
#endif

/* Sequences in flight per thread, by default: enough rows that the weights
 * are reused across many of them per step, few enough that one worker's
 * activations and KV caches stay near its core's L2 cache. */
static int rb_default_slots(const runc_batch *b)
{
    size_t per_slot = b->kv_slot + (size_t)(3 * b->sD + b->sQKV + b->s13 + b->sH + b->sV);
    size_t budget = (size_t)768 * 1024 / sizeof(float);
    size_t s = budget / (per_slot ? per_slot : 1);
    if (s < 16) s = 16;
    if (s > 32) s = 32; /* more rows barely help: make bench finds 16-32 per thread best from 10K to 1M params */
    return (int)(s / 4 * 4); /* whole tiles of the matrix kernels */
}

void runc_batch_close(runc_batch *b)
{
    if (!b) return;
#if RB_THREADS
    if (b->lock_ok) pthread_mutex_destroy(&b->lock);
#endif
    free(b->wmem);
    free(b->amem);
    free(b->workers);
    free(b->layers);
    free(b);
}

int runc_batch_open(runc_batch **out, const runc_model *m, const runc_tokenizer *tok, const runc_batch_options *opt,
                    runc_error *err)
{
    runc_batch_options o;
    const runc_config *c;
    runc_batch *b;
    rb_bump a;
    unsigned char *base;
    int context;
    size_t cap;

    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_batch_open: NULL output pointer");
    *out = NULL;
    if (!m) return runc_set_error(err, RUNC_E_ARG, "runc_batch_open: NULL model");
    if (!tok) return runc_set_error(err, RUNC_E_ARG, "runc_batch_open: NULL tokenizer");
    c = runc_model_config(m);
    memset(&o, 0, sizeof o);
    if (opt) o = *opt;
    if (runc_tokenizer_vocab_size(tok) != c->vocab_size)
        return runc_set_error(err, RUNC_E_VOCAB, "tokenizer has %d tokens, the model %d", runc_tokenizer_vocab_size(tok),
                        c->vocab_size);
    if (c->vocab_size <= RUNC_TOKEN_EOS)
        return runc_set_error(err, RUNC_E_VOCAB, "vocabulary of %d tokens has no BOS and EOS", c->vocab_size);
    if (o.threads < 0 || o.threads > RUNC_BATCH_MAX_THREADS)
        return runc_set_error(err, RUNC_E_ARG, "threads = %d must be in 1..%d, or 0 for one per CPU core", o.threads,
                        RUNC_BATCH_MAX_THREADS);
    if (o.slots < 0 || o.slots > RUNC_BATCH_MAX_SLOTS)
        return runc_set_error(err, RUNC_E_ARG, "slots = %d must be in 1..%d, or 0 for a default", o.slots,
                        RUNC_BATCH_MAX_SLOTS);
    if (o.kernels != RUNC_KERNELS_AUTO && o.kernels != RUNC_KERNELS_PORTABLE && o.kernels != RUNC_KERNELS_AVX2)
        return runc_set_error(err, RUNC_E_ARG,
                        "kernels = %d must be RUNC_KERNELS_AUTO, RUNC_KERNELS_PORTABLE or RUNC_KERNELS_AVX2", o.kernels);
    context = o.context ? o.context : c->max_seq_len;
    if (o.context < 0 || context > c->max_seq_len || context < 2)
        return runc_set_error(err, RUNC_E_ARG, "context %d must be in 2..max_seq_len (%d), or 0 for all of it", o.context,
                        c->max_seq_len);
    if (c->version == 2 && c->group_size > 1024)
        return runc_set_error(err, RUNC_E_UNSUPPORTED,
                        "the batch engine takes Q8_0 groups of at most 1024 values (this model: %d)",
                        c->group_size);
    if (c->dim > 65536 || c->hidden_dim > 1048576 || (size_t)c->max_seq_len * (size_t)c->dim > (size_t)INT_MAX / 4)
        return runc_set_error(err, RUNC_E_OVERFLOW, "model too large for the batch engine");

    b = (runc_batch *)calloc(1, sizeof *b);
    if (!b) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    b->model = m;
    b->tok = tok;
#if RB_THREADS
    b->threads = o.threads ? o.threads : rb_online_cpus();
#else
    b->threads = 1; /* no threads on this platform: one worker, the caller */
#endif
    b->context = context;
    b->max_answer = RUNC_DEFAULT_MAX_ANSWER;
    b->q8 = c->version == 2;
    b->gs = c->group_size;
    b->D = c->dim;
    b->H = c->hidden_dim;
    b->KV = c->kv_dim;
    b->hs = c->head_size;
    b->nh = c->n_heads;
    b->nkv = c->n_kv_heads;
    b->V = c->vocab_size;
    b->L = c->n_layers;
    b->sD = rup(b->D, 16);
    b->sH = rup(b->H, 16);
    b->sQKV = rup(b->D + 2 * b->KV, 16);
    b->s13 = rup(b->H + b->sH, 16); /* h3 = h1 + H, read up to sH values (SwiGLU runs whole vectors) */
    b->sV = rup(b->V, 16);
    b->sX = b->sD > b->sH ? b->sD : b->sH;
    b->gX = b->q8 ? (b->D > b->H ? b->D : b->H) / b->gs : 0;
    b->gp = rup(b->nkv, 8);
    /* keys then values, per layer, each (context, head_size, gp) */
    b->kv_slot = (size_t)b->L * 2 * (size_t)b->context * (size_t)b->hs * (size_t)b->gp;
    b->att_scale = 1.0f / sqrtf((float)b->hs);
    b->slots = o.slots ? o.slots : rb_default_slots(b);
    /* the encoding scratch: a prompt that encodes within it cannot be longer
     * than any prompt runc_solve accepts (see rb_start) */
    cap = (size_t)context * (size_t)runc_tokenizer_max_token_length(tok) + 3;
    b->scratch_cap = cap < (size_t)RUNC_PROMPT_SCRATCH ? cap : (size_t)RUNC_PROMPT_SCRATCH;
    b->kernels = "portable C";
    b->step = step_c;
    b->z16 = !b->q8 && RB_C_Z16; /* a -march=native build with AVX-512: the 16-float tile is in step_c */
#if RB_DISPATCH_X86
    if (o.kernels == RUNC_KERNELS_AUTO || o.kernels == RUNC_KERNELS_AVX2) {
        __builtin_cpu_init();
        if (o.kernels == RUNC_KERNELS_AUTO && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni") &&
            __builtin_cpu_supports("fma")) {
            b->step = step_avx512;
            b->kernels = "avx512vl+vnni";
            b->vnni = b->q8 && b->gs % 4 == 0;
            b->z16 = !b->q8;
        } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            b->step = step_avx2;
            b->kernels = "avx2";
        }
    }
#elif defined(RB_NATIVE_VNNI)
    b->kernels = "avx512vl+vnni (compiled in)";
    b->vnni = b->q8 && b->gs % 4 == 0 && o.kernels == RUNC_KERNELS_AUTO;
#elif defined(__AVX512VL__)
    b->kernels = "avx512vl (compiled in)";
#elif defined(__AVX2__)
    b->kernels = "avx2 (compiled in)";
#endif
    /* kv heads that do not fill whole vectors of 8 (2 heads: 6 lanes of 8
     * idle; 18 heads: 6 of 24) leave lanes idle and need transposes: the slots
     * are the attention's lanes instead, in kernels with vectors (the cache
     * then holds (context, kv_dim) per slot, in octets of slots). Measured
     * (bench_runc, one thread): 18 heads +5-9%; 8 heads fill their vector and
     * stay on attend. */
    b->lanes = b->nkv % 8 != 0 && (b->step != step_c || RB_C_LANES);
    if (b->lanes) b->kv_slot = (size_t)b->L * 2 * (size_t)b->context * (size_t)b->KV;

    b->layers = (rb_layer *)calloc((size_t)b->L, sizeof *b->layers);
    b->workers = (rb_worker *)calloc((size_t)b->threads, sizeof *b->workers);
    if (!b->layers || !b->workers) {
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    }

    /* weights: dry run for the size, then pack */
    memset(&a, 0, sizeof a);
    rb_pack_all(&a, b);
    if (a.overflow) {
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_OVERFLOW, "packed weights overflow the address space");
    }
    b->wbytes = a.used;
    base = (unsigned char *)rb_alloc(a.used, &b->wmem);
    if (!base) {
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory for %zu bytes of packed weights", a.used);
    }
    memset(&a, 0, sizeof a);
    a.base = base;
    rb_pack_all(&a, b);

    /* slots, KV caches, activations: one arena */
    memset(&a, 0, sizeof a);
    rb_layout_workers(&a, b);
    if (a.overflow) {
        int threads = b->threads, slots = b->slots;
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_OVERFLOW, "KV caches of %d x %d slots overflow the address space", threads,
                        slots);
    }
    b->abytes = a.used;
    base = (unsigned char *)rb_alloc(a.used, &b->amem);
    if (!base) {
        int threads = b->threads, slots = b->slots;
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory for the batch arena (%zu bytes: %d threads x %d slots)",
                        a.used, threads, slots);
    }
    memset(&a, 0, sizeof a);
    a.base = base;
    rb_layout_workers(&a, b);

#if RB_THREADS
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        runc_batch_close(b);
        return runc_set_error(err, RUNC_E_NOMEM, "cannot create a mutex");
    }
    b->lock_ok = 1;
#endif
    *out = b;
    return runc_set_ok(err);
}

int runc_batch_threads(const runc_batch *b)
{
    return b ? b->threads : 0;
}

int runc_batch_slots(const runc_batch *b)
{
    return b ? b->slots : 0;
}

int runc_batch_context(const runc_batch *b)
{
    return b ? b->context : 0;
}

size_t runc_batch_bytes(const runc_batch *b)
{
    return b ? b->wbytes + b->abytes + 2 * RB_ALIGN : 0;
}

const char *runc_batch_kernels(const runc_batch *b)
{
    return b ? b->kernels : "";
}

long long runc_batch_tokens(const runc_batch *b)
{
    return b ? b->tokens : 0;
}

int runc_batch_set_max_answer(runc_batch *b, int max_answer, runc_error *err)
{
    if (!b) return runc_set_error(err, RUNC_E_ARG, "runc_batch_set_max_answer: NULL batch");
    return runc_max_answer_arg(max_answer, &b->max_answer, err);
}

int runc_batch_max_answer(const runc_batch *b)
{
    return b ? b->max_answer : 0;
}

size_t runc_batch_answer_cap(const runc_batch *b)
{
    size_t n, tokens;
    if (!b) return 0;
    /* the answer's tokens: at most max_answer, and fewer than the context */
    tokens = (size_t)(b->max_answer < b->context ? b->max_answer : b->context);
    n = (size_t)runc_tokenizer_max_token_length(b->tok);
    if (n != 0 && tokens > (SIZE_MAX - 1) / n) return SIZE_MAX;
    return tokens * n + 1;
}

/* ========================================================================== */
/* solving                                                                     */
/* ========================================================================== */

static int rb_take_problem(runc_batch *b)
{
    int i = -1;
#if RB_THREADS
    if (b->threads > 1) pthread_mutex_lock(&b->lock);
#endif
    if (b->next < b->n) i = b->next++;
#if RB_THREADS
    if (b->threads > 1) pthread_mutex_unlock(&b->lock);
#endif
    return i;
}

/* Problem `index` failed: an empty answer, its status, and the worker's
 * lowest failing index (runc_batch_solve's err). */
static void rb_fail(rb_worker *w, int index, int code, const char *message)
{
    runc_batch *b = w->b;
    b->answers[(size_t)index * b->answer_cap] = '\0';
    if (b->n_generated) b->n_generated[index] = 0;
    if (b->mean_lp) b->mean_lp[index] = 0.0f;
    if (b->min_lp) b->min_lp[index] = 0.0f;
    if (b->prompt_errors) {
        b->prompt_errors[index].code = code;
        snprintf(b->prompt_errors[index].message, sizeof b->prompt_errors[index].message, "%s", message);
    }
    if (w->err_code == RUNC_OK || index < w->err_index) {
        w->err_code = code;
        w->err_index = index;
        snprintf(w->err_msg, sizeof w->err_msg, "%s", message);
    }
}

/* Copy the keys and values of positions 0..n-1, every layer, from slot src's
 * cache to slot dst's (attend's layout, or attend_lanes' octets). */
static void rb_copy_kv(const runc_batch *b, rb_worker *w, int dst, int src, int n)
{
    int l, p, c;
    for (l = 0; l < b->L; l++) {
        if (b->lanes) {
            const size_t KV8 = (size_t)b->KV * 8, C = (size_t)b->context;
            float *kd = w->kv + ((size_t)(dst / 8) * (size_t)b->L + (size_t)l) * 2 * C * KV8 + dst % 8;
            const float *ks = w->kv + ((size_t)(src / 8) * (size_t)b->L + (size_t)l) * 2 * C * KV8 + src % 8;
            for (p = 0; p < n; p++)
                for (c = 0; c < b->KV; c++) {
                    const size_t at = (size_t)p * KV8 + (size_t)c * 8;
                    kd[at] = ks[at];
                    kd[C * KV8 + at] = ks[C * KV8 + at];
                }
        } else {
            const size_t pos = (size_t)b->hs * (size_t)b->gp, half = (size_t)b->context * pos;
            float *kd = rb_slot_kv(b, w, dst, l);
            const float *ks = rb_slot_kv(b, w, src, l);
            memcpy(kd, ks, (size_t)n * pos * sizeof(float));
            memcpy(kd + half, ks + half, (size_t)n * pos * sizeof(float));
        }
    }
}

/* Prefix reuse (runc_reusable): a prompt that begins as some slot's cached
 * tokens (its own previous problem's, or another slot's) takes those
 * positions' keys and values instead of running them, bit for bit what
 * running them would give. Classic problems share a lot ("24 + 8", "24 + 9",
 * ...): with a few dozen slots, a random prompt finds most of its first
 * tokens cached. Returns how many positions slot s now holds for ids[0..n_ids). */
static int rb_reuse_prefix(rb_worker *w, int s, const int *ids, int n_ids)
{
    const runc_batch *b = w->b;
    int best = 0, from = s, d;
    for (d = 0; d < w->nslots; d++) {
        /* slot s first: its own cache needs no copy, so another slot must do better */
        const int slot = (s + d) % w->nslots;
        const int k = runc_reusable(w->ids + (size_t)slot * (size_t)b->context, w->slot_kvn[slot], ids, n_ids);
        if (k > best) {
            best = k;
            from = slot;
            if (best == n_ids - 1) break; /* no slot can give more */
        }
    }
    if (from != s) rb_copy_kv(b, w, s, from, best);
    return best;
}

/* Put problem i into slot s: the problem convention's input
 * (runc_problem_encode, as runc_solve), its cached first positions taken from
 * a slot that holds them. 0 when the prompt failed (recorded; the slot stays
 * free). */
static int rb_start(rb_worker *w, int s, int i)
{
    runc_batch *b = w->b;
    const char *prompt = b->prompts[i];
    runc_error e;
    int n_ids = 0, rc, reused;
    if (!prompt) {
        rb_fail(w, i, RUNC_E_ARG, "NULL prompt");
        return 0;
    }
    /* the scratch (context * max_token_length + 3 ints, capped) refuses only
     * prompts too long for the context; below that it is at least strlen + 3,
     * what runc_solve gives the encoder */
    rc = runc_problem_encode(b->tok, prompt, b->context, w->scratch, (int)b->scratch_cap, &n_ids, &e);
    if (rc != RUNC_OK) {
        rb_fail(w, i, rc, e.message);
        return 0;
    }
    reused = rb_reuse_prefix(w, s, w->scratch, n_ids);
    memcpy(w->ids + (size_t)s * (size_t)b->context, w->scratch, (size_t)n_ids * sizeof(int));
    w->slot_prob[s] = i;
    w->slot_np[s] = n_ids;
    w->slot_kvn[s] = reused;
    w->slot_pos[s] = reused;
    w->slot_tok[s] = w->scratch[reused];
    w->slot_new[s] = (unsigned char)b->lanes; /* see rb_align_octets */
    w->slot_ngen[s] = 0;
    w->slot_lpsum[s] = 0.0f;
    w->slot_lpmin[s] = 0.0f;
    return 1;
}

/* attend_lanes runs every lane of an octet up to its furthest position (the
 * others masked), so slots that take problems in the same refill start at the
 * same position: the fewest positions any of them reuses. Each slot's cache
 * holds at least that many; the positions it then runs again give the same
 * keys and values. Without this, slots that would run in step (answers of
 * one length) drift apart by their reuse and attention costs more than the
 * reuse saves. */
static void rb_align_octets(rb_worker *w)
{
    int o, s;
    for (o = 0; o < w->nslots; o += 8) {
        const int end = o + 8 < w->nslots ? o + 8 : w->nslots;
        int start = INT_MAX;
        for (s = o; s < end; s++)
            if (w->slot_new[s] && w->slot_pos[s] < start) start = w->slot_pos[s];
        for (s = o; s < end; s++)
            if (w->slot_new[s]) {
                w->slot_pos[s] = w->slot_kvn[s] = start;
                w->slot_tok[s] = w->ids[(size_t)s * (size_t)w->b->context + (size_t)start];
                w->slot_new[s] = 0;
            }
    }
}

/* Slot s is done: its answer by the problem convention (runc_problem_answer,
 * as runc_solve), recorded; the slot is free. */
static void rb_finish(rb_worker *w, int s, int lp_count)
{
    runc_batch *b = w->b;
    const int i = w->slot_prob[s], np = w->slot_np[s], ng = w->slot_ngen[s];
    const int *ids = w->ids + (size_t)s * (size_t)b->context;
    runc_error e;
    w->slot_prob[s] = -1;
    if (runc_problem_answer(b->tok, ids, np, ng, b->answers + (size_t)i * b->answer_cap, b->answer_cap, &e) !=
        RUNC_OK) {
        rb_fail(w, i, e.code, e.message);
        return;
    }
    if (b->n_generated) b->n_generated[i] = ng;
    if (b->mean_lp) b->mean_lp[i] = lp_count ? w->slot_lpsum[s] / (float)lp_count : 0.0f;
    if (b->min_lp) b->min_lp[i] = w->slot_lpmin[s];
    if (b->prompt_errors) runc_set_ok(&b->prompt_errors[i]);
}

static void rb_worker_run(rb_worker *w)
{
    runc_batch *b = w->b;
    const int context = b->context;
    int active = 0, s;
    for (s = 0; s < w->nslots; s++) w->slot_prob[s] = -1, w->slot_kvn[s] = 0, w->slot_new[s] = 0;
    w->tokens = 0;
    w->want_lp = b->mean_lp || b->min_lp;
    w->drained = 0;
    for (;;) {
        int B = 0, BL = 0, r, j;
        /* refill: a finished slot takes the next problem at once */
        /* (the queue position b->next is read only under the lock: ThreadSanitizer
         * reported the unlocked check that stood here as a data race) */
        for (s = 0; s < w->nslots && active < w->fill && !w->drained; s++) {
            while (w->slot_prob[s] < 0) {
                int i = rb_take_problem(b);
                if (i < 0) {
                    w->drained = 1;
                    break;
                }
                if (rb_start(w, s, i)) active++;
            }
        }
        w->fill = w->nslots; /* only the first fill shares the queue out evenly */
        if (b->lanes) rb_align_octets(w);
        for (s = 0; s < w->nslots; s++) {
            if (w->slot_prob[s] < 0) continue;
            w->row_slot[B] = s;
            w->row_tok[B] = w->slot_tok[s];
            w->row_pos[B] = w->slot_pos[s];
            w->row_out[B] = w->slot_pos[s] >= w->slot_np[s] - 1;
            if (w->row_out[B]) w->lrow[BL++] = B;
            B++;
        }
        if (B == 0) break;
        b->step(b, w, B, BL);
        w->tokens += B;
        /* every row's position is now cached; rows still in their prompt: feed the next prompt token */
        for (r = 0; r < B; r++) {
            s = w->row_slot[r];
            w->slot_kvn[s] = w->row_pos[r] + 1;
            if (w->slot_pos[s] < w->slot_np[s] - 1) {
                w->slot_pos[s]++;
                w->slot_tok[s] = w->ids[(size_t)s * (size_t)context + (size_t)w->slot_pos[s]];
            }
        }
        /* rows with logits: the greedy token (runc.c's argmax: the first maximum) */
        for (j = 0; j < BL; j++) {
            const float *lg = w->logits + (size_t)j * (size_t)b->sV;
            int best = 0, v, np, ng;
            r = w->lrow[j];
            s = w->row_slot[r];
            np = w->slot_np[s];
            ng = w->slot_ngen[s];
            if (!runc_step_finite(lg, b->V, w->x + (size_t)j * (size_t)b->sD, b->D)) { /* the forward pass overflowed: as runc_solve, it names the layer */
                runc_error e;
                runc_nonfinite_error(b->model, w->ids + (size_t)s * (size_t)context, np + ng, &e);
                rb_fail(w, w->slot_prob[s], e.code, e.message);
                w->slot_prob[s] = -1;
                active--;
                continue;
            }
            for (v = 1; v < b->V; v++)
                if (lg[v] > lg[best]) best = v;
            if (w->want_lp) {
                float lp = w->lp[j];
                w->slot_lpsum[s] += lp;
                if (ng == 0 || lp < w->slot_lpmin[s]) w->slot_lpmin[s] = lp;
            }
            if (best == RUNC_TOKEN_EOS) {
                rb_finish(w, s, ng + 1);
                active--;
                continue;
            }
            w->ids[(size_t)s * (size_t)context + (size_t)(np + ng)] = best;
            w->slot_ngen[s] = ++ng;
            if (np + ng >= context || ng >= b->max_answer) { /* the context is full, or the answer: no EOS */
                rb_finish(w, s, ng);
                active--;
                continue;
            }
            w->slot_tok[s] = best;
            w->slot_pos[s] = np + ng - 1;
        }
    }
}

#if RB_THREADS
static void *rb_thread_main(void *arg)
{
    rb_worker_run((rb_worker *)arg);
    return NULL;
}
#endif

int runc_batch_solve(runc_batch *b, const char *const *prompts, int n, char *answers, size_t answer_cap,
                     int *n_generated, float *mean_logprob, float *min_logprob, runc_error *prompt_errors,
                     runc_error *err)
{
    int t, first = -1, code = RUNC_OK, per;
    if (!b) return runc_set_error(err, RUNC_E_ARG, "runc_batch_solve: NULL batch");
    b->tokens = 0;
    if (n < 0 || (n > 0 && (!prompts || !answers)))
        return runc_set_error(err, RUNC_E_ARG, "runc_batch_solve: NULL argument or negative count");
    if (n == 0) return runc_set_ok(err);
    if (answer_cap == 0 || (size_t)n > SIZE_MAX / answer_cap)
        return runc_set_error(err, RUNC_E_ARG, "runc_batch_solve: answer_cap must be positive (runc_batch_answer_cap)");
    b->prompts = prompts;
    b->n = n;
    b->answers = answers;
    b->answer_cap = answer_cap;
    b->n_generated = n_generated;
    b->mean_lp = mean_logprob;
    b->min_lp = min_logprob;
    b->prompt_errors = prompt_errors;
    b->next = 0;
    per = (n + b->threads - 1) / b->threads;
    for (t = 0; t < b->threads; t++) {
        rb_worker *w = &b->workers[t];
        w->err_code = RUNC_OK;
        w->err_index = -1;
        w->err_msg[0] = '\0';
        w->fill = per < w->nslots ? per : w->nslots;
    }
#if RB_THREADS
    {
        pthread_t tid[RUNC_BATCH_MAX_THREADS];
        char started[RUNC_BATCH_MAX_THREADS];
        for (t = 1; t < b->threads && t < n; t++) /* no thread without a problem to take */
            started[t] = pthread_create(&tid[t], NULL, rb_thread_main, &b->workers[t]) == 0;
        for (; t < b->threads; t++) started[t] = 0;
        rb_worker_run(&b->workers[0]);
        for (t = 1; t < b->threads; t++)
            if (started[t]) pthread_join(tid[t], NULL);
        /* a thread that could not start leaves its share to the others, which
         * take from the queue until it is empty */
        for (t = 1; t < b->threads; t++)
            if (!started[t] && b->next < b->n) rb_worker_run(&b->workers[t]);
    }
#else
    rb_worker_run(&b->workers[0]);
#endif
    for (t = 0; t < b->threads; t++) {
        rb_worker *w = &b->workers[t];
        b->tokens += w->tokens;
        if (w->err_code != RUNC_OK && (first < 0 || w->err_index < b->workers[first].err_index)) first = t;
    }
    b->prompts = NULL;
    if (first >= 0) {
        rb_worker *w = &b->workers[first];
        code = w->err_code;
        return runc_set_error(err, code, "prompt %d: %s", w->err_index, w->err_msg);
    }
    return runc_set_ok(err);
}
