/*
 * runc_impl.h - internals shared by the two halves of the runc library:
 * runc.c (one sequence at a time) and batch.c (the batch engine). Not an API:
 * nothing outside the library includes it.
 *
 * Both halves must compute bit-identical activations for the same token at
 * the same position (the batch engine's greedy answers equal runc_solve's),
 * so the one function whose result depends on its implementation, exp, is
 * defined here once, and both use it.
 */
#ifndef RUNC_IMPL_H
#define RUNC_IMPL_H

/* No fused multiply-add here either (see runc.c): runc_expf below is inlined
 * into the batch engine's AVX2 kernels (target "fma"), where clang would
 * otherwise fuse its a*b+c and round differently from runc_forward's copy. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include "runc.h"

#include <stdint.h>
#include <string.h>

/* One weight matrix (rows x cols, row-major): fp32 in f, or Q8_0 in q (int8
 * values) and s (one fp32 scale per group of group_size consecutive values;
 * group_size divides cols, so groups never straddle rows). */
typedef struct {
    const float *f;
    const int8_t *q;
    const float *s;
} runc_mat;

struct runc_model {
    runc_config cfg;
    /* where the file's bytes live */
    const unsigned char *data;
    size_t size;
    unsigned char *owned;        /* our malloc'd copy (read path, RUNC_OPEN_COPY, misaligned buffer) */
    void *map;                   /* our mmap (size bytes) */
    void **allocs;               /* aligned copies of misaligned fp32 tensors (v2 scales) */
    size_t n_allocs, cap_allocs;
    /* weights; the per-layer matrices all live in `mats` */
    const float *rms_att;        /* (n_layers, dim) */
    const float *rms_ffn;        /* (n_layers, dim) */
    const float *rms_final;      /* (dim) */
    runc_mat tok;                /* (vocab_size, dim) */
    runc_mat cls;                /* (vocab_size, dim); equal to tok when shared */
    runc_mat *mats;              /* 7 x n_layers: wq, wk, wv, wo, w1, w2, w3 */
    runc_mat *wq, *wk, *wv, *wo, *w1, *w2, *w3;
    float *rope_freq;            /* (head_size / 2) rotation frequencies */
};

/* Fill *err (when not NULL) with code and a printf-style message; return code.
 * Shared by runc.c and batch.c so every error is reported one way. */
int runc_set_error(runc_error *err, int code, const char *fmt, ...);
/* Clear *err (when not NULL); return RUNC_OK. */
int runc_set_ok(runc_error *err);

/* An answer cap as the API takes it (0: the default), checked, into *out; RUNC_E_ARG when out of range. */
int runc_max_answer_arg(int max_answer, int *out, runc_error *err);

/* exp(x) in float, within 1 ulp of the exact value (subnormal results and
 * overflow to inf included; NaN in, NaN out). Written without branches or
 * libm calls so that a loop of it vectorises (libm's expf does not), and
 * deterministic across platforms and libm versions.
 *
 * x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2 (Cody-Waite, two
 * parts of ln2), exp(r) by Cephes' polynomial, and 2^n applied in two halves
 * so that neither factor leaves the normal range. |x| > 104 is first clamped
 * to +-104, whose exp already overflows / underflows; the clamp and the NaN
 * test work on the bits (integer compares), which keeps the loop free of
 * floating-point compares the compiler may not if-convert. */
static inline float runc_expf(float x)
{
    float t, n, r, p, s1, s2, y;
    uint32_t xb, ax, tb, b1, b2, yb, m;
    int32_t ni, n1, n2;
    memcpy(&xb, &x, sizeof xb);
    ax = xb & 0x7FFFFFFFu;
    m = 0u - (uint32_t)(ax > 0x42D00000u); /* |x| > 104, inf, NaN */
    xb = (xb & ~m) | (((xb & 0x80000000u) | 0x42D00000u) & m);
    memcpy(&x, &xb, sizeof x);
    t = x * 1.44269504088896341f + 12582912.0f; /* + 1.5 * 2^23 rounds x/ln2 to an integer */
    memcpy(&tb, &t, sizeof tb);
    n = t - 12582912.0f;
    r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    ni = (int32_t)(tb - 0x4B400000u); /* n, from the low bits of t */
    n1 = ni / 2;
    n2 = ni - n1;
    b1 = (uint32_t)(n1 + 127) << 23;
    b2 = (uint32_t)(n2 + 127) << 23;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    y = p * s1 * s2;
    memcpy(&yb, &y, sizeof yb);
    m = 0u - (uint32_t)(ax > 0x7F800000u); /* NaN in: a quiet NaN out */
    yb = (yb & ~m) | ((ax | 0x00400000u) & m);
    memcpy(&y, &yb, sizeof y);
    return y;
}

/* The TinyMath problem convention, the two ends runc_solve and the batch
 * engine share (the greedy decoding between them is each one's own); defined
 * in runc.c.
 *
 * The input: ids = [BOS] + encode(prompt) (with the dummy prefix), *n_ids
 * tokens that must leave the answer at least one of `context` positions, else
 * RUNC_E_CONTEXT. ids holds cap ints, cap >= strlen(prompt) + 3 always
 * sufficing; a prompt longer than cap - 3 bytes is refused unencoded
 * (RUNC_E_CONTEXT), as the batch engine needs: its scratch holds context *
 * max_token_length + 3 ints (at most RUNC_PROMPT_SCRATCH), and a token covers
 * at most max_token_length bytes. A prompt longer than that scratch allows is
 * refused so whatever cap the caller gives (runc_solve gives strlen + 3): the
 * same status and message from both engines. */
enum { RUNC_PROMPT_SCRATCH = 1 << 22 };
int runc_problem_encode(const runc_tokenizer *t, const char *prompt, int context, int *ids, int cap, int *n_ids,
                        runc_error *err);

/* The output: answer = the text of the n_gen tokens generated after the
 * prompt's n_prompt tokens (ids[n_prompt..n_prompt+n_gen), decoded after
 * ids[n_prompt - 1]) without surrounding whitespace, NUL-terminated in cap
 * bytes ("" and RUNC_E_BUFFER when it does not fit). */
int runc_problem_answer(const runc_tokenizer *t, const int *ids, int n_prompt, int n_gen, char *answer, size_t cap,
                        runc_error *err);

/* 1 when x[0..n) are all finite: one pass, no branch per value (x - x is 0
 * for a finite x and NaN for an infinite or NaN one; the sum keeps a NaN). */
static inline int runc_all_finite(const float *x, int n)
{
    float z = 0.0f;
    int i;
    for (i = 0; i < n; i++) z += x[i] - x[i];
    return z == z;
}

/* 1 when the residual x[0..n) can be normalised: its sum of squares, in
 * RMSNorm's order, is finite (so every value is). A larger x is finite but
 * normalises to 0: the logits are all 0, the answer <unk><unk>... */
static inline int runc_norm_finite(const float *x, int n)
{
    float ss = 0.0f;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    return ss - ss == 0.0f;
}

/* Both engines check each step with it (issue 25: overflowing weights gave
 * <unk><unk>... silently): the logits and the residual the classifier read. */
static inline int runc_step_finite(const float *logits, int V, const float *x, int D)
{
    return runc_all_finite(logits, V) && runc_norm_finite(x, D);
}

/* The error of a forward pass whose logits at the last of tokens[0..n) were
 * not finite: RUNC_E_NONFINITE, the message naming the first position and
 * layer whose output is not finite (found by running the tokens again on a
 * fresh state: the same arithmetic, only on this error path), the same for
 * both engines. Defined in runc.c. */
int runc_nonfinite_error(const runc_model *m, const int *tokens, int n, runc_error *err);

/* Prefix reuse, the rule runc_generate and the batch engine share: how many
 * of a prompt's first positions a cache that holds cached[0..n_cached) may
 * give it (their keys and values depend only on the tokens up to them). The
 * last prompt token always runs, for its logits. */
static inline int runc_reusable(const int *cached, int n_cached, const int *prompt, int n_prompt)
{
    int k = 0;
    while (k < n_prompt - 1 && k < n_cached && cached[k] == prompt[k]) k++;
    return k;
}

#endif /* RUNC_IMPL_H */
