/*
 * bench_runc.c - times the C engine for `make bench` (bench/bench_engines.py runs it).
 *
 *   bench_runc MODEL TOKENIZER PROMPTS MODE THREADS SLOTS CONTEXT SECONDS REPEATS
 *
 * PROMPTS: a file of prompts, one per line. MODE: "batch" (runc_batch_solve,
 * THREADS workers x SLOTS sequences, 0 = defaults) or "single" (runc_solve,
 * one problem at a time, one thread). CONTEXT: positions per sequence (0 = the
 * model's). Each of REPEATS runs solves the prompts over and over for at least
 * SECONDS of wall time. Prints one JSON line: problems/s and tokens/s of each
 * run and their medians, tokens per problem (prompt and answer tokens run),
 * the kernels, and the peak resident memory of this process.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#include <sys/resource.h>
#include <sys/time.h>
#endif

#include "runc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what, const runc_error *e)
{
    fprintf(stderr, "bench_runc: %s: %s\n", what, e ? e->message : "");
    exit(1);
}

/* Peak resident memory of this process in KiB: VmHWM on Linux (getrusage's
 * ru_maxrss would count the parent's memory before exec), else ru_maxrss. */
static long peak_rss_kb(void)
{
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char row[256];
        while (fgets(row, sizeof row, f))
            if (strncmp(row, "VmHWM:", 6) == 0) kb = strtol(row + 6, NULL, 10);
        fclose(f);
    }
#if defined(__unix__) || defined(__APPLE__)
    if (kb == 0) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) kb = ru.ru_maxrss;
    }
#endif
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    runc_model *m = NULL;
    runc_tokenizer *tok = NULL;
    runc_error e;
    FILE *f;
    char line[1024], **prompts = NULL, *answers;
    int n = 0, cap_prompts = 0, threads, slots, context, repeats, rep, single, i;
    double seconds, rates[64], trates[64], t0, dt;
    long long tokens_per_call = 0;
    size_t answer_cap;
    runc_batch *b = NULL;
    runc_state *st = NULL;
    const char *kernels = "runc_solve";

    if (argc != 10) {
        fprintf(stderr, "usage: bench_runc MODEL TOKENIZER PROMPTS batch|single THREADS SLOTS CONTEXT SECONDS REPEATS\n");
        return 2;
    }
    single = strcmp(argv[4], "single") == 0;
    threads = atoi(argv[5]);
    slots = atoi(argv[6]);
    context = atoi(argv[7]);
    seconds = atof(argv[8]);
    repeats = atoi(argv[9]);
    if (repeats < 1) repeats = 1;
    if (repeats > 64) repeats = 64;

    if (runc_model_open(&m, argv[1], 0, &e) != RUNC_OK) die(argv[1], &e);
    if (runc_tokenizer_open(&tok, argv[2], runc_model_config(m)->vocab_size, &e) != RUNC_OK) die(argv[2], &e);
    f = fopen(argv[3], "r");
    if (!f) die(argv[3], NULL);
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0) continue;
        if (n == cap_prompts) {
            cap_prompts = cap_prompts ? 2 * cap_prompts : 1024;
            prompts = (char **)realloc(prompts, (size_t)cap_prompts * sizeof *prompts);
            if (!prompts) die("out of memory", NULL);
        }
        prompts[n] = (char *)malloc(len + 1);
        if (!prompts[n]) die("out of memory", NULL);
        memcpy(prompts[n++], line, len + 1);
    }
    fclose(f);
    if (n == 0) die("no prompts", NULL);

    if (single) {
        if (runc_state_open(&st, m, context, &e) != RUNC_OK) die("state", &e);
        answer_cap = runc_answer_cap(st, tok);
    } else {
        runc_batch_options o;
        memset(&o, 0, sizeof o);
        o.threads = threads;
        o.slots = slots;
        o.context = context;
        if (runc_batch_open(&b, m, tok, &o, &e) != RUNC_OK) die("batch", &e);
        answer_cap = runc_batch_answer_cap(b);
        kernels = runc_batch_kernels(b);
    }
    answers = (char *)malloc((size_t)n * answer_cap);
    if (!answers) die("out of memory", NULL);

    /* one untimed call: pages in the weights, and counts the tokens of a call */
    if (single) {
        long long before = runc_state_tokens(st);
        for (i = 0; i < n; i++)
            if (runc_solve(st, tok, prompts[i], answers, answer_cap, NULL, &e) != RUNC_OK) die("solve", &e);
        tokens_per_call = runc_state_tokens(st) - before;
    } else {
        if (runc_batch_solve(b, (const char *const *)prompts, n, answers, answer_cap, NULL, NULL, NULL, NULL, &e) !=
            RUNC_OK)
            die("solve", &e);
        tokens_per_call = runc_batch_tokens(b);
    }

    for (rep = 0; rep < repeats; rep++) {
        long long problems = 0;
        t0 = now();
        do {
            if (single) {
                for (i = 0; i < n; i++)
                    if (runc_solve(st, tok, prompts[i], answers, answer_cap, NULL, &e) != RUNC_OK) die("solve", &e);
            } else if (runc_batch_solve(b, (const char *const *)prompts, n, answers, answer_cap, NULL, NULL, NULL,
                                        NULL, &e) != RUNC_OK) {
                die("solve", &e);
            }
            problems += n;
            dt = now() - t0;
        } while (dt < seconds);
        rates[rep] = (double)problems / dt;
        trates[rep] = rates[rep] * (double)tokens_per_call / (double)n;
    }

    {
        double sorted[64], tsorted[64];
        long maxrss = peak_rss_kb();
        memcpy(sorted, rates, sizeof(double) * (size_t)repeats);
        memcpy(tsorted, trates, sizeof(double) * (size_t)repeats);
        qsort(sorted, (size_t)repeats, sizeof(double), cmp_double);
        qsort(tsorted, (size_t)repeats, sizeof(double), cmp_double);
        printf("{\"mode\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"slots\": %d, \"problems\": %d, "
               "\"tokens_per_problem\": %.3f, \"problems_per_s\": %.1f, \"tokens_per_s\": %.1f, \"runs\": [",
               single ? "single" : "batch", kernels, single ? 1 : runc_batch_threads(b), single ? 1 : runc_batch_slots(b),
               n, (double)tokens_per_call / (double)n, sorted[repeats / 2], tsorted[repeats / 2]);
        for (rep = 0; rep < repeats; rep++) printf("%s%.1f", rep ? ", " : "", rates[rep]);
        printf("], \"engine_bytes\": %zu, \"maxrss_kb\": %ld}\n", single ? (size_t)0 : runc_batch_bytes(b), maxrss);
    }

    for (i = 0; i < n; i++) free(prompts[i]);
    free(prompts);
    free(answers);
    runc_batch_close(b);
    runc_state_close(st);
    runc_tokenizer_close(tok);
    runc_model_close(m);
    return 0;
}
