/*
 * prof_train.c - a driver for profiling and timing the C training engine
 * without Python: it reads batches dumped by bench/dump_batches.py (a model
 * shape and a few real batches), sets random weights, and runs training steps
 * for a number of seconds, printing tokens/s (positions computed per second).
 *
 *   make train-prof      (runc/tests/test_train_prof: ignored by git like the tests' other binaries)
 *   python bench/dump_batches.py /tmp/div.bin --task '{"task":"arith","ops":"/","format":"steps"}' --batch 128
 *   runc/tests/test_train_prof /tmp/div.bin SECONDS [THREADS [STEPS]]   (STEPS: exactly that many timed steps)
 *
 * File layout (int32, little-endian): dim hidden_dim n_layers n_heads n_kv_heads
 * vocab_size max_seq_len tied batch n_batches, then per batch: width, then
 * tokens[batch x width], then targets[batch x width].
 */
#define _POSIX_C_SOURCE 199309L
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int read_ints(FILE *f, int *out, size_t n)
{
    return fread(out, sizeof(int), n, f) == n;
}

int main(int argc, char **argv)
{
    FILE *f;
    int head[10], nb, b, i, steps = 0, fixed;
    int **tok, **tgt, *width;
    runc_train_config c;
    runc_trainer *t = NULL;
    runc_error err;
    runc_train_stats st;
    double seconds, t0, c0, el, cpu;
    long long pos = 0, n, j;
    float *p;
    unsigned long long s = 0x9E3779B97F4A7C15ull;
    if (argc < 3) {
        fprintf(stderr, "usage: %s BATCHES.bin SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    seconds = atof(argv[2]);
    f = fopen(argv[1], "rb");
    if (!f || !read_ints(f, head, 10)) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    runc_train_config_default(&c);
    c.dim = head[0];
    c.hidden_dim = head[1];
    c.n_layers = head[2];
    c.n_heads = head[3];
    c.n_kv_heads = head[4];
    c.vocab_size = head[5];
    c.max_seq_len = head[6];
    c.tied = head[7];
    c.max_batch = head[8];
    c.threads = argc > 3 ? atoi(argv[3]) : 1;
    fixed = argc > 4 ? atoi(argv[4]) : 0;
    nb = head[9];
    tok = (int **)calloc((size_t)nb, sizeof *tok);
    tgt = (int **)calloc((size_t)nb, sizeof *tgt);
    width = (int *)calloc((size_t)nb, sizeof *width);
    for (b = 0; b < nb; b++) {
        size_t m;
        if (!read_ints(f, &width[b], 1)) return 1;
        m = (size_t)c.max_batch * (size_t)width[b];
        tok[b] = (int *)malloc(m * sizeof(int));
        tgt[b] = (int *)malloc(m * sizeof(int));
        if (!read_ints(f, tok[b], m) || !read_ints(f, tgt[b], m)) return 1;
    }
    fclose(f);
    if (runc_train_open(&t, &c, &err)) {
        fprintf(stderr, "open: %s\n", err.message);
        return 1;
    }
    n = runc_train_n_params(t);
    p = runc_train_buffer(t, RUNC_TRAIN_PARAMS);
    for (j = 0; j < n; j++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[j] = 0.1f * ((float)(s >> 40) / (float)(1ull << 24) - 0.5f);
    }
    for (i = 0; i < 2; i++) runc_train_step(t, tok[0], tgt[0], c.max_batch, width[0], 1e-3, &st, &err);
    t0 = now(CLOCK_MONOTONIC);
    c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    do {
        b = steps % nb;
        if (runc_train_step(t, tok[b], tgt[b], c.max_batch, width[b], 1e-3, &st, &err)) {
            fprintf(stderr, "step: %s\n", err.message);
            return 1;
        }
        pos += st.n_computed;
        steps++;
        el = now(CLOCK_MONOTONIC) - t0;
    } while (fixed > 0 ? steps < fixed : el < seconds);
    cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    /* on a shared machine the CPU clock (all threads together) is the steadier measure */
    {   /* FNV-1a of the last step's gradients' bits: equal results, equal hashes */
        unsigned long long hash = 1469598103934665603ull;
        const unsigned char *bytes = (const unsigned char *)runc_train_buffer(t, RUNC_TRAIN_GRADS);
        for (j = 0; j < n * (long long)sizeof(float); j++) hash = (hash ^ bytes[j]) * 1099511628211ull;
        printf("%lld params, %d steps, %.1f positions/step, %.0f tokens/s, %.2f ms/step, %.0f tokens per CPU s, "
               "loss %.9g, gradients %016llx\n", n, steps, (double)pos / steps, (double)pos / el, 1e3 * el / steps,
               (double)pos / cpu, st.loss_sum / st.n_answer, hash);
    }
    runc_train_close(t);
    for (b = 0; b < nb; b++) {
        free(tok[b]);
        free(tgt[b]);
    }
    free(tok);
    free(tgt);
    free(width);
    return 0;
}
