/*
 * tsan_batch.c - the batch engine under ThreadSanitizer (make tsan-check; runs in make test).
 *
 *   clang -fsanitize=thread -g -O1 -Irunc runc/tests/tsan_batch.c runc/runc.c runc/batch.c -lm -lpthread
 *
 * Small random models (v1 fp32 and v2 int8, grouped-query attention) with a
 * digits tokenizer; a few hundred problems solved by:
 *   - runc_solve, one sequence at a time (the reference answers);
 *   - runc_batch_solve with 4 worker threads and 3 slots each (so finished
 *     slots are refilled from the shared queue while other threads decode),
 *     with the portable and the automatic kernels, twice per engine;
 *   - two batch engines and two runc_solve threads at once, all on the same
 *     model and tokenizer (documented as shareable, read-only objects).
 * Every answer must equal the reference, and TSan must report no data race
 * (a report makes the program exit non-zero: TSAN_OPTIONS=halt_on_error=1 in
 * runc/tests/tsan.mk). Also checks the engine's argument errors (zero batch, NULL
 * prompts and buffers, bad options).
 */
#define TEST_PROGRAM "tsan_batch"
#include "test_util.h" /* CHECK, n_fail, buf and put_* */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_PROMPTS 96
#define DIM 32
#define HIDDEN 64
#define LAYERS 2
#define HEADS 4
#define KV_HEADS 2
#define SEQ 24

static unsigned long long rng = 88172645463325252ull;
static float frand(void) /* uniform [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

static const char *const pieces[] = {"<unk>", "\n<s>\n", "\n</s>\n", " ", "0", "1", "2", "3", "4", "5",
                                     "6", "7", "8", "9", "+", "-", "*", "/", "=", ".", " =", "00", ".00"};
#define VOCAB ((int)(sizeof pieces / sizeof pieces[0]))

static buf tokenizer_file(void)
{
    buf b = {NULL, 0, 0};
    int i;
    put_i32(&b, 6);
    for (i = 0; i < VOCAB; i++) put_piece(&b, pieces[i], i < 3 ? 0.0f : (float)-(i % 5) - 1.0f);
    return b;
}

static buf model_file(int version)
{
    buf b = {NULL, 0, 0};
    const int gs = 16, kv = DIM / HEADS * KV_HEADS;
    const int32_t cfg[7] = {DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, SEQ};
    int l, k;
    /* version 1: fp32 weights; 2: Q8_0 in groups of gs */
    put_model_header(&b, version, cfg, 0, gs, 256);
    for (k = 0; k < 2 * LAYERS * DIM + DIM; k++) put_f32(&b, 1.0f + 0.2f * frand()); /* norms */
    put_rand_matrix(&b, (size_t)VOCAB * DIM, 1.0f, version, gs, frand);            /* embedding */
    {
        const size_t sizes[7] = {(size_t)DIM * DIM, (size_t)kv * DIM, (size_t)kv * DIM, (size_t)DIM * DIM,
                                 (size_t)HIDDEN * DIM, (size_t)DIM * HIDDEN, (size_t)HIDDEN * DIM};
        for (k = 0; k < 7; k++)
            for (l = 0; l < LAYERS; l++) put_rand_matrix(&b, sizes[k], 0.5f, version, gs, frand);
    }
    put_rand_matrix(&b, (size_t)VOCAB * DIM, 1.0f, version, gs, frand); /* untied classifier */
    return b;
}

/* ---- shared inputs ---------------------------------------------------------------------------------- */

static const runc_model *g_model;
static const runc_tokenizer *g_tok;
static const char *g_prompts[N_PROMPTS];
static char g_prompt_text[N_PROMPTS][32];
static char *g_reference; /* N_PROMPTS x cap */
static size_t g_cap;

typedef struct {
    int first, count; /* prompts solved */
    int use_batch;
    int kernels;
    int bad;          /* answers that differ from the reference */
    int rc;
} job;

static void *solve_job(void *arg)
{
    job *j = (job *)arg;
    runc_error e;
    if (j->use_batch) {
        runc_batch *b = NULL;
        runc_batch_options o;
        char *answers = NULL;
        size_t cap;
        int i;
        memset(&o, 0, sizeof o);
        o.threads = 2;
        o.slots = 2;
        o.kernels = j->kernels;
        j->rc = runc_batch_open(&b, g_model, g_tok, &o, &e);
        if (j->rc != RUNC_OK) return NULL;
        cap = runc_batch_answer_cap(b);
        answers = (char *)calloc((size_t)j->count, cap);
        if (!answers) exit(2);
        j->rc = runc_batch_solve(b, g_prompts + j->first, j->count, answers, cap, NULL, NULL, NULL, NULL, &e);
        for (i = 0; i < j->count; i++)
            if (strcmp(answers + (size_t)i * cap, g_reference + (size_t)(j->first + i) * g_cap) != 0) j->bad++;
        free(answers);
        runc_batch_close(b);
    } else {
        runc_state *st = NULL;
        char *answer = (char *)malloc(g_cap);
        int i;
        if (!answer) exit(2);
        j->rc = runc_state_open(&st, g_model, 0, &e);
        for (i = 0; i < j->count && j->rc == RUNC_OK; i++) {
            j->rc = runc_solve(st, g_tok, g_prompts[j->first + i], answer, g_cap, NULL, &e);
            if (j->rc == RUNC_OK && strcmp(answer, g_reference + (size_t)(j->first + i) * g_cap) != 0) j->bad++;
        }
        runc_state_close(st);
        free(answer);
    }
    return NULL;
}

static void check_version(int version)
{
    buf mb = model_file(version), tb = tokenizer_file();
    runc_model *m = NULL;
    runc_tokenizer *t = NULL;
    runc_state *st = NULL;
    runc_error e;
    int i, k, rc;

    rc = runc_model_open_buffer(&m, mb.p, mb.n, RUNC_OPEN_COPY, &e);
    CHECK(rc == RUNC_OK, "v%d model: %s", version, e.message);
    rc = runc_tokenizer_open_buffer(&t, tb.p, tb.n, VOCAB, &e);
    CHECK(rc == RUNC_OK, "tokenizer: %s", e.message);
    if (!m || !t) return;
    g_model = m;
    g_tok = t;

    /* the reference: runc_solve, one at a time */
    runc_state_open(&st, m, 0, &e);
    g_cap = runc_answer_cap(st, t);
    g_reference = (char *)calloc(N_PROMPTS, g_cap);
    if (!g_reference) exit(2);
    for (i = 0; i < N_PROMPTS; i++) {
        rc = runc_solve(st, t, g_prompts[i], g_reference + (size_t)i * g_cap, g_cap, NULL, &e);
        CHECK(rc == RUNC_OK, "runc_solve '%s': %s", g_prompts[i], e.message);
    }
    runc_state_close(st);

    /* one engine, 4 workers x 3 slots, both kernel sets, twice each */
    for (k = 0; k < 2; k++) {
        runc_batch *b = NULL;
        runc_batch_options o;
        memset(&o, 0, sizeof o);
        o.threads = 4;
        o.slots = 3;
        o.kernels = k ? RUNC_KERNELS_PORTABLE : RUNC_KERNELS_AUTO;
        rc = runc_batch_open(&b, m, t, &o, &e);
        CHECK(rc == RUNC_OK, "batch open: %s", e.message);
        if (rc == RUNC_OK) {
            size_t cap = runc_batch_answer_cap(b);
            char *answers = (char *)calloc(N_PROMPTS, cap);
            int *n_gen = (int *)calloc(N_PROMPTS, sizeof *n_gen);
            float *mean_lp = (float *)calloc(N_PROMPTS, sizeof *mean_lp);
            float *min_lp = (float *)calloc(N_PROMPTS, sizeof *min_lp);
            runc_error *errs = (runc_error *)calloc(N_PROMPTS, sizeof *errs);
            int round, bad;
            if (!answers || !n_gen || !mean_lp || !min_lp || !errs) exit(2);
            for (round = 0; round < 2; round++) {
                memset(errs, 'z', N_PROMPTS * sizeof *errs);
                rc = runc_batch_solve(b, g_prompts, N_PROMPTS, answers, cap, n_gen, mean_lp, min_lp, errs, &e);
                CHECK(rc == RUNC_OK, "batch solve (%s): %s", runc_batch_kernels(b), e.message);
                for (i = 0, bad = 0; i < N_PROMPTS; i++)
                    if (strcmp(answers + (size_t)i * cap, g_reference + (size_t)i * g_cap) != 0) {
                        if (bad++ < 3)
                            printf("  v%d %s: '%s' -> batch '%s', runc_solve '%s'\n", version, runc_batch_kernels(b),
                                   g_prompts[i], answers + (size_t)i * cap, g_reference + (size_t)i * g_cap);
                    }
                CHECK(bad == 0, "v%d %s round %d: %d batch answers differ from runc_solve's", version,
                      runc_batch_kernels(b), round, bad);
                /* each prompt's status, written by the worker that solved it */
                for (i = 0, bad = 0; i < N_PROMPTS; i++) bad += errs[i].code != RUNC_OK || errs[i].message[0] != '\0';
                CHECK(bad == 0, "v%d %s round %d: %d prompts' status is not RUNC_OK", version, runc_batch_kernels(b),
                      round, bad);
            }
            /* misuse: a clear error or a no-op, never a crash */
            CHECK(runc_batch_solve(b, g_prompts, 0, NULL, 0, NULL, NULL, NULL, NULL, &e) == RUNC_OK,
                  "zero batch is a no-op: %s", e.message);
            CHECK(runc_batch_solve(b, g_prompts, -1, answers, cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG,
                  "negative count");
            CHECK(runc_batch_solve(b, NULL, 3, answers, cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG,
                  "NULL prompts");
            CHECK(runc_batch_solve(b, g_prompts, 3, NULL, cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG,
                  "NULL answers");
            CHECK(runc_batch_solve(b, g_prompts, 3, answers, 0, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG,
                  "answer_cap 0");
            CHECK(runc_batch_solve(NULL, g_prompts, 3, answers, cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG,
                  "NULL engine");
            {
                const char *with_null[3] = {"1 + 1 =", NULL, "2 + 2 ="};
                rc = runc_batch_solve(b, with_null, 3, answers, cap, NULL, NULL, NULL, errs, &e);
                CHECK(rc == RUNC_E_ARG && strstr(e.message, "prompt 1"),
                      "a NULL prompt fails the call, naming it: %s (%s)", runc_status_name(rc), e.message);
                CHECK(errs[0].code == RUNC_OK && errs[1].code == RUNC_E_ARG && errs[2].code == RUNC_OK,
                      "each prompt's status: %d %d %d", errs[0].code, errs[1].code, errs[2].code);
            }
            free(answers);
            free(n_gen);
            free(mean_lp);
            free(min_lp);
            free(errs);
            runc_batch_close(b);
        }
    }

    /* engines and states at once on the same model and tokenizer */
    {
        job jobs[4];
        pthread_t tid[4];
        int started[4];
        memset(jobs, 0, sizeof jobs);
        jobs[0].use_batch = 1, jobs[0].first = 0, jobs[0].count = N_PROMPTS, jobs[0].kernels = RUNC_KERNELS_AUTO;
        jobs[1].use_batch = 1, jobs[1].first = 0, jobs[1].count = N_PROMPTS, jobs[1].kernels = RUNC_KERNELS_PORTABLE;
        jobs[2].first = 0, jobs[2].count = N_PROMPTS / 2;
        jobs[3].first = N_PROMPTS / 2, jobs[3].count = N_PROMPTS - N_PROMPTS / 2;
        for (i = 0; i < 4; i++) started[i] = pthread_create(&tid[i], NULL, solve_job, &jobs[i]) == 0;
        for (i = 0; i < 4; i++)
            if (started[i]) pthread_join(tid[i], NULL);
        for (i = 0; i < 4; i++)
            CHECK(started[i] && jobs[i].rc == RUNC_OK && jobs[i].bad == 0, "v%d concurrent job %d: rc %s, %d differ",
                  version, i, runc_status_name(jobs[i].rc), jobs[i].bad);
    }

    /* bad options */
    {
        runc_batch *b = (runc_batch *)&b;
        runc_batch_options o;
        memset(&o, 0, sizeof o);
        o.threads = -1;
        CHECK(runc_batch_open(&b, m, t, &o, &e) == RUNC_E_ARG && b == NULL, "threads -1");
        o.threads = 1, o.slots = -1;
        CHECK(runc_batch_open(&b, m, t, &o, &e) == RUNC_E_ARG, "slots -1");
        o.slots = 1, o.context = SEQ + 1;
        CHECK(runc_batch_open(&b, m, t, &o, &e) == RUNC_E_ARG, "context past max_seq_len");
        o.context = 0, o.kernels = 7;
        CHECK(runc_batch_open(&b, m, t, &o, &e) == RUNC_E_ARG, "kernels 7");
        CHECK(runc_batch_open(&b, NULL, t, NULL, &e) == RUNC_E_ARG, "NULL model");
        CHECK(runc_batch_open(&b, m, NULL, NULL, &e) == RUNC_E_ARG, "NULL tokenizer");
        CHECK(runc_batch_open(NULL, m, t, NULL, &e) == RUNC_E_ARG, "NULL out");
        runc_batch_close(NULL);
    }

    free(g_reference);
    runc_tokenizer_close(t);
    runc_model_close(m);
    free(mb.p);
    free(tb.p);
}

int main(void)
{
    static const char ops[4] = {'+', '-', '*', '/'};
    int i;
    for (i = 0; i < N_PROMPTS; i++) {
        /* a few lengths, so that sequences finish at different steps */
        if (i % 7 == 0) snprintf(g_prompt_text[i], sizeof g_prompt_text[i], "%d =", i);
        else snprintf(g_prompt_text[i], sizeof g_prompt_text[i], "%d %c %d =", (i * 37) % 100, ops[i % 4], (i * 11) % 97);
        g_prompts[i] = g_prompt_text[i];
    }
    check_version(1);
    check_version(2);
    printf("tsan_batch: %s\n", n_fail ? "FAILED" : "ok");
    return n_fail ? 1 : 0;
}
