/*
 * test_train.c - checks of the C training engine (runc/train.h) that need no
 * Python: refusals of bad configs and batches (the field named), gradients
 * against central finite differences on a small model (tied and untied, GQA),
 * bit-identical repeats at a fixed thread count, 1 vs 3 threads within float
 * rounding, a loss that falls, a non-finite loss refused without an update, and
 * subnormals flushed while the engine runs, the caller's floating-point mode kept.
 * The agreement with PyTorch, tensor by tensor, is tests/test_train_c.py.
 *
 *   make train-c-test     (plain, under ASan+UBSan, and the threads under TSan)
 */
#include "train.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static int failures = 0;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* xorshift: the tests' own deterministic randomness */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned long long rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rnd_normal(void)  /* roughly normal: sum of uniforms */
{
    float s = 0.0f;
    int i;
    for (i = 0; i < 12; i++) s += (float)(rnd() >> 40) / (float)(1ull << 24);
    return s - 6.0f;
}

static runc_train_config small_config(int tied, int kv, int threads)
{
    runc_train_config c;
    runc_train_config_default(&c);
    c.dim = 12;
    c.hidden_dim = 18;
    c.n_layers = 2;
    c.n_heads = 3;
    c.n_kv_heads = kv;
    c.vocab_size = 11;
    c.max_seq_len = 9;
    c.tied = tied;
    c.max_batch = 6;
    c.threads = threads;
    return c;
}

static runc_trainer *open_random(const runc_train_config *c, unsigned long long seed)
{
    runc_trainer *t = NULL;
    runc_error err;
    long long i, n;
    float *p;
    int e, rows, cols;
    char name[64];
    if (runc_train_open(&t, c, &err)) {
        fprintf(stderr, "open: %s\n", err.message);
        exit(1);
    }
    rng_state = seed;
    n = runc_train_n_params(t);
    p = runc_train_buffer(t, RUNC_TRAIN_PARAMS);
    for (i = 0; i < n; i++) p[i] = 0.3f * rnd_normal();
    for (e = 0; e < runc_train_n_tensors(t); e++) {  /* norms near 1, as after init */
        long long off;
        runc_train_tensor(t, e, name, sizeof name, &off, &rows, &cols, NULL, NULL);
        if (cols == 1)
            for (i = 0; i < rows; i++) p[off + i] = 1.0f + 0.1f * rnd_normal();
    }
    return t;
}

/* a batch: rows of different lengths, answers after a prompt of 3 */
static void make_batch(int *tok, int *tgt, int B, int W, int V)
{
    int r, p;
    for (r = 0; r < B; r++) {
        const int len = W - (r % 3);
        for (p = 0; p < W; p++) {
            tok[r * W + p] = p < len ? (int)(rnd() % (unsigned long long)V) : 0;
            tgt[r * W + p] = (p >= 3 && p < len) ? (int)(rnd() % (unsigned long long)V) : RUNC_TRAIN_IGNORE;
        }
    }
}

static void test_config_errors(void)
{
    static const struct { const char *field; size_t at; int value; } bad[] = {
        {"dim", offsetof(runc_train_config, dim), 0},
        {"hidden_dim", offsetof(runc_train_config, hidden_dim), -1},
        {"n_layers", offsetof(runc_train_config, n_layers), 0},
        {"n_heads", offsetof(runc_train_config, n_heads), 0},
        {"n_kv_heads", offsetof(runc_train_config, n_kv_heads), 0},
        {"vocab_size", offsetof(runc_train_config, vocab_size), 0},
        {"max_seq_len", offsetof(runc_train_config, max_seq_len), 0},
        {"max_batch", offsetof(runc_train_config, max_batch), 0},
        {"threads", offsetof(runc_train_config, threads), 0},
        {"n_heads", offsetof(runc_train_config, n_heads), 5},     /* does not divide dim */
        {"n_kv_heads", offsetof(runc_train_config, n_kv_heads), 2}, /* does not divide n_heads 3 */
        {"tied", offsetof(runc_train_config, tied), 2},
    };
    size_t i;
    runc_trainer *t = NULL;
    runc_error err;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        runc_train_config c = small_config(1, 3, 1);
        memcpy((char *)&c + bad[i].at, &bad[i].value, sizeof(int));
        CHECK(runc_train_open(&t, &c, &err) != RUNC_OK && t == NULL, "config %s=%d accepted", bad[i].field,
              bad[i].value);
        CHECK(strstr(err.message, bad[i].field) != NULL, "message for %s: %s", bad[i].field, err.message);
    }
    {
        runc_train_config c = small_config(1, 3, 1);
        c.dim = 6;  /* head size 2, GQA 3 -> 1 */
        c.n_heads = 3;
        c.n_kv_heads = 1;
        CHECK(runc_train_open(&t, &c, &err) == RUNC_OK, "head size 2: %s", err.message);
        runc_train_close(t);
        c.dim = 9;
        c.n_heads = 3;  /* head size 3: odd */
        CHECK(runc_train_open(&t, &c, &err) == RUNC_E_SHAPE && strstr(err.message, "head size"), "odd head: %s",
              err.message);
        c = small_config(1, 3, 1);
        c.norm_eps = 0.0f;
        CHECK(runc_train_open(&t, &c, &err) == RUNC_E_FIELD && strstr(err.message, "norm_eps"), "%s", err.message);
        c = small_config(1, 3, 1);
        c.beta2 = 1.0;
        CHECK(runc_train_open(&t, &c, &err) == RUNC_E_FIELD && strstr(err.message, "beta2"), "%s", err.message);
        c = small_config(1, 3, 1);
        c.grad_clip = -1.0;
        CHECK(runc_train_open(&t, &c, &err) == RUNC_E_FIELD && strstr(err.message, "grad_clip"), "%s", err.message);
        c = small_config(1, 3, 1);
        c.max_batch = 1 << 20;
        c.max_seq_len = 65536;
        c.dim = 65536;
        c.n_heads = 1;
        c.n_kv_heads = 1;
        CHECK(runc_train_open(&t, &c, &err) != RUNC_OK, "a huge arena was allocated");
    }
    CHECK(runc_train_open(NULL, NULL, &err) == RUNC_E_ARG, "NULL accepted");
}

static void test_batch_errors(void)
{
    runc_train_config c = small_config(1, 3, 1);
    runc_trainer *t = open_random(&c, 1);
    runc_error err;
    int tok[7 * 9], tgt[7 * 9];
    make_batch(tok, tgt, 7, 9, c.vocab_size);
    CHECK(runc_train_step(t, tok, tgt, 7, 9, 1e-3, NULL, &err) == RUNC_E_BUFFER && strstr(err.message, "max_batch"),
          "7 rows: %s", err.message);
    CHECK(runc_train_step(t, tok, tgt, 5, 10, 1e-3, NULL, &err) == RUNC_E_CONTEXT &&
          strstr(err.message, "max_seq_len"), "width 10: %s", err.message);
    make_batch(tok, tgt, 6, 9, c.vocab_size);
    tok[2 * 9 + 4] = 11;
    CHECK(runc_train_step(t, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG && strstr(err.message, "token 11") &&
          strstr(err.message, "row 2, position 4"), "token 11: %s", err.message);
    tok[2 * 9 + 4] = -1;
    CHECK(runc_train_step(t, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG && strstr(err.message, "token -1"),
          "token -1: %s", err.message);
    tok[2 * 9 + 4] = 0;
    tgt[9 + 5] = 99;
    CHECK(runc_train_step(t, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG && strstr(err.message, "target 99"),
          "target 99: %s", err.message);
    {
        int i;
        for (i = 0; i < 6 * 9; i++) tgt[i] = RUNC_TRAIN_IGNORE;
        CHECK(runc_train_step(t, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG &&
              strstr(err.message, "no answer tokens"), "no answers: %s", err.message);
    }
    CHECK(runc_train_step(t, NULL, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG, "NULL tokens");
    CHECK(runc_train_step(NULL, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_ARG, "NULL trainer");
    runc_train_close(t);
}

static double loss_of(runc_trainer *t, const int *tok, const int *tgt, int B, int W)
{
    runc_train_stats st;
    runc_error err;
    if (runc_train_forward_backward(t, tok, tgt, B, W, NULL, 0, &st, &err)) {
        fprintf(stderr, "forward: %s\n", err.message);
        exit(1);
    }
    return st.loss_sum / st.n_answer;
}

/* Central differences in float are noisy: a step of 1e-2 and a loose bound, on the
 * entries with the largest gradients of each tensor, catch any wrong formula. */
static void test_finite_differences(int tied, int kv)
{
    runc_train_config c = small_config(tied, kv, 2);
    runc_trainer *t = open_random(&c, 7 + (unsigned long long)tied + 10ull * (unsigned long long)kv);
    int tok[6 * 9], tgt[6 * 9], e;
    float *p = runc_train_buffer(t, RUNC_TRAIN_PARAMS), *g;
    long long n = runc_train_n_params(t);
    float *grad = (float *)malloc((size_t)n * sizeof(float));
    make_batch(tok, tgt, 6, 9, c.vocab_size);
    loss_of(t, tok, tgt, 6, 9);
    g = runc_train_buffer(t, RUNC_TRAIN_GRADS);
    memcpy(grad, g, (size_t)n * sizeof(float));
    for (e = 0; e < runc_train_n_tensors(t); e++) {
        char name[64];
        long long off, i, at[3];
        int rows, cols, probe;
        double worst = 0.0, gmax = 0.0;
        runc_train_tensor(t, e, name, sizeof name, &off, &rows, &cols, NULL, NULL);
        at[0] = off;
        for (i = off; i < off + (long long)rows * cols; i++)
            if (fabs(grad[i]) > gmax) {
                gmax = fabs(grad[i]);
                at[0] = i;
            }
        at[1] = off + (long long)rows * cols / 2;  /* and two entries by position */
        at[2] = off + (long long)rows * cols - 1;
        for (probe = 0; probe < 3; probe++) {
            const long long j = at[probe];
            const float keep = p[j];
            double up, down, fd, rel;
            p[j] = keep + 1e-2f;
            up = loss_of(t, tok, tgt, 6, 9);
            p[j] = keep - 1e-2f;
            down = loss_of(t, tok, tgt, 6, 9);
            p[j] = keep;
            fd = (up - down) / ((double)(keep + 1e-2f) - (double)(keep - 1e-2f));
            rel = fabs(fd - grad[j]) / (fabs(grad[j]) + 0.05 * gmax + 1e-6);
            if (rel > worst) worst = rel;
        }
        CHECK(worst < 2e-2, "tied %d kv %d: %s: finite differences differ by %.3g", tied, kv, name, worst);
    }
    free(grad);
    runc_train_close(t);
}

static void run_steps(runc_trainer *t, int steps, double *losses)
{
    int tok[6 * 9], tgt[6 * 9], s;
    runc_train_stats st;
    runc_error err;
    rng_state = 99;
    make_batch(tok, tgt, 6, 9, 11);
    for (s = 0; s < steps; s++) {
        if (runc_train_step(t, tok, tgt, 6, 9, 3e-3, &st, &err)) {
            fprintf(stderr, "step: %s\n", err.message);
            exit(1);
        }
        losses[s] = st.loss_sum / st.n_answer;
    }
}

static void test_threads_and_learning(void)
{
    runc_train_config c1 = small_config(0, 1, 1), c3 = small_config(0, 1, 3);
    runc_trainer *a = open_random(&c3, 5), *b = open_random(&c3, 5), *one = open_random(&c1, 5);
    double la[40], lb[40], l1[40];
    long long n = runc_train_n_params(a), i;
    float maxdiff = 0.0f;
    run_steps(a, 40, la);
    run_steps(b, 40, lb);
    run_steps(one, 40, l1);
    CHECK(memcmp(runc_train_buffer(a, RUNC_TRAIN_PARAMS), runc_train_buffer(b, RUNC_TRAIN_PARAMS),
                 (size_t)n * sizeof(float)) == 0, "3 threads twice: parameters differ");
    CHECK(memcmp(la, lb, sizeof la) == 0, "3 threads twice: losses differ");
    for (i = 0; i < n; i++) {
        const float d = fabsf(runc_train_buffer(a, RUNC_TRAIN_PARAMS)[i] - runc_train_buffer(one, RUNC_TRAIN_PARAMS)[i]);
        if (d > maxdiff) maxdiff = d;
    }
    CHECK(maxdiff < 1e-4f, "1 vs 3 threads: parameters differ by %g after 40 steps", (double)maxdiff);
    CHECK(la[39] < 0.5 * la[0], "the loss did not fall: %g -> %g", la[0], la[39]);
    CHECK(runc_train_adam_steps(a) == 40, "adam steps %lld", runc_train_adam_steps(a));
    runc_train_close(a);
    runc_train_close(b);
    runc_train_close(one);
}

static void test_nan_refused(void)
{
    runc_train_config c = small_config(1, 3, 2);
    runc_trainer *t = open_random(&c, 3);
    int tok[6 * 9], tgt[6 * 9];
    long long n = runc_train_n_params(t);
    float *p = runc_train_buffer(t, RUNC_TRAIN_PARAMS);
    float *copy = (float *)malloc((size_t)n * sizeof(float));
    runc_error err;
    make_batch(tok, tgt, 6, 9, c.vocab_size);
    p[n - 1] = NAN;  /* the final norm's last weight */
    memcpy(copy, p, (size_t)n * sizeof(float));
    CHECK(runc_train_step(t, tok, tgt, 6, 9, 1e-3, NULL, &err) == RUNC_E_WEIGHT && strstr(err.message, "not finite"),
          "NaN: %s", err.message);
    CHECK(memcmp(copy, p, (size_t)n * sizeof(float)) == 0, "NaN step changed the parameters");
    CHECK(runc_train_adam_steps(t) == 0, "NaN step counted");
    free(copy);
    runc_train_close(t);
}

/* On x86-64 a weight already subnormal (1e-39) comes out of a weight-decay update as exactly 0, and
 * the caller's own mode (MXCSR) is the same after the step as before: its subnormals are kept. */
static void test_subnormals_flushed(void)
{
    runc_train_config c = small_config(1, 3, 2);
    runc_trainer *t;
    int tok[6 * 9], tgt[6 * 9];
    float *p, *g;
    long long n;
    runc_error err;
    volatile float tiny = 1e-39f, scaled;
    c.weight_decay = 0.5;
    t = open_random(&c, 11);
    n = runc_train_n_params(t);
    p = runc_train_buffer(t, RUNC_TRAIN_PARAMS);
    g = runc_train_buffer(t, RUNC_TRAIN_GRADS);
    make_batch(tok, tgt, 6, 9, c.vocab_size);
    CHECK(tiny > 0.0f && tiny < FLT_MIN, "1e-39f is not subnormal here");
    CHECK(runc_train_forward_backward(t, tok, tgt, 6, 9, NULL, 0, NULL, &err) == RUNC_OK, "%s", err.message);
    memset(g, 0, (size_t)n * sizeof(float));  /* no gradient: the update is weight decay alone */
    p[c.vocab_size * c.dim] = tiny;          /* a decayed matrix weight (the first layer's wq) */
    {
#if defined(__x86_64__)
        const unsigned int before = _mm_getcsr();
#endif
        CHECK(runc_train_update(t, 1e-2, NULL, &err) == RUNC_OK, "%s", err.message);
#if defined(__x86_64__)
        CHECK(_mm_getcsr() == before, "MXCSR changed by a step: %#x -> %#x", before, _mm_getcsr());
#endif
    }
    scaled = tiny * 0.995f;  /* the caller's arithmetic: subnormals kept */
#if defined(__x86_64__)
    CHECK(p[c.vocab_size * c.dim] == 0.0f, "a subnormal weight survived: %g", (double)p[c.vocab_size * c.dim]);
#endif  /* aarch64 (FPCR.FZ) runs this under qemu, which need not model flushing; armhf flushes nothing */
    CHECK(scaled > 0.0f, "the caller's subnormals are flushed after a step");
    runc_train_close(t);
}

/* The build picked for this CPU (AVX-512 product tiles on this x86-64) gives the AVX2 build's bits,
 * and the portable build (no fused multiply-adds) agrees within float rounding, on a model wide
 * enough for every tile (dim 32, kv_dim 16, hidden 48: 6 rows x 32 and 6 x 16 columns). */
static void test_kernels_agree(void)
{
    runc_train_config c = small_config(1, 2, 1);
    runc_trainer *t[3];
    double loss[3][10];
    const int kernels[3] = {RUNC_KERNELS_AUTO, RUNC_KERNELS_AVX2, RUNC_KERNELS_PORTABLE};
    long long n, i;
    float maxdiff = 0.0f;
    int k;
    runc_error err;
    c.dim = 32;
    c.n_heads = 4;
    c.hidden_dim = 48;
    c.kernels = 3;
    CHECK(runc_train_open(&t[0], &c, &err) == RUNC_E_FIELD && strstr(err.message, "kernels"),
          "kernels 3 not refused by name: %s", err.message);
    for (k = 0; k < 3; k++) {
        c.kernels = kernels[k];
        t[k] = open_random(&c, 21);
        run_steps(t[k], 10, loss[k]);
    }
    printf("test_train: kernels %s, %s, %s\n", runc_train_kernels(t[0]), runc_train_kernels(t[1]),
           runc_train_kernels(t[2]));
    CHECK(strcmp(runc_train_kernels(t[2]), "portable C") == 0, "portable asked, %s given", runc_train_kernels(t[2]));
    n = runc_train_n_params(t[0]);
    CHECK(memcmp(runc_train_buffer(t[0], RUNC_TRAIN_PARAMS), runc_train_buffer(t[1], RUNC_TRAIN_PARAMS),
                 (size_t)n * sizeof(float)) == 0, "%s and %s builds: parameters differ after 10 steps",
          runc_train_kernels(t[0]), runc_train_kernels(t[1]));
    CHECK(memcmp(loss[0], loss[1], sizeof loss[0]) == 0, "%s and %s builds: losses differ", runc_train_kernels(t[0]),
          runc_train_kernels(t[1]));
    for (i = 0; i < n; i++) {
        const float d = fabsf(runc_train_buffer(t[0], RUNC_TRAIN_PARAMS)[i] - runc_train_buffer(t[2], RUNC_TRAIN_PARAMS)[i]);
        if (d > maxdiff) maxdiff = d;
    }
    CHECK(maxdiff < 1e-4f, "%s vs portable: parameters differ by %g after 10 steps", runc_train_kernels(t[0]),
          (double)maxdiff);
    for (k = 0; k < 3; k++) runc_train_close(t[k]);
}

int main(void)
{
    test_config_errors();
    test_batch_errors();
    test_finite_differences(1, 3);
    test_finite_differences(0, 1);
    test_finite_differences(1, 1);
    test_threads_and_learning();
    test_nan_refused();
    test_subnormals_flushed();
    test_kernels_agree();
    if (failures) {
        fprintf(stderr, "test_train: %d failures\n", failures);
        return 1;
    }
    printf("test_train: all checks passed\n");
    return 0;
}
