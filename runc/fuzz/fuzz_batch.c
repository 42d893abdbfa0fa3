/*
 * fuzz_batch.c - libFuzzer harness of the batch engine against the single
 * path: runc_batch_solve on a fuzzed list of prompts, under two engine
 * settings, each answer and each prompt's status compared with runc_solve's.
 *
 *   make fuzz-batch FUZZ_SECONDS=60      (runc/fuzz/fuzz.mk)
 *
 * The models are fixed: $RUNC_FUZZ_BATCH names model and tokenizer files
 * alternating, colon-separated (runc/fuzz/fuzz.mk points it at the seed
 * script's real exports: small random-weight models, each fp32 (v1) file
 * followed by its int8 (v2) twin, over SentencePiece tokenizers with and
 * without byte fallback).
 *
 * Input: five settings bytes, then the prompts.
 *   byte 0  which model (and its tokenizer), modulo their number;
 *   byte 1  engine A, byte 2 engine B: bits 0-1 threads (1 + value % 3: 1..3),
 *           bits 2-4 slots per thread (0 = the engine's default), bits 5-6
 *           kernels (0 and 3 automatic, 1 portable C, 2 at most AVX2), bit 7
 *           no confidence outputs (mean and min log-probability NULL);
 *   byte 3  max_answer, set on the state and on both engines: 0 leaves the
 *           default, 1..239 that many tokens, 240..255 one of special[]
 *           (0, negative, the largest, past it, the context and around it);
 *   byte 4  the context, for the state and both engines: 0 the model's
 *           max_seq_len, else 2 + (value - 1) % (max_seq_len - 1);
 *   then the prompts: the rest split on '\n' (at most MAX_PROMPTS; an empty
 *   rest or a trailing '\n' gives an empty prompt). Anything goes in a
 *   prompt: empty, whitespace, characters the vocabulary lacks, broken UTF-8,
 *   longer than the context; a NUL byte ends it (the API takes C strings).
 *
 * Checked, for each engine setting: max_answer is accepted or refused alike
 * (code and message) by runc_state_set_max_answer and runc_batch_set_max_answer;
 * the context, max_answer and answer cap agree with the state's; each prompt's
 * status (prompt_errors) has runc_solve's code and message and its answer
 * and generated-token count are runc_solve's, byte for byte; the call returns
 * the status of the lowest failing prompt with "prompt N: " and its message;
 * the two settings give the same confidences, bit for bit; every message is
 * one NUL-terminated line. runc_solve runs the prompts in order on one state
 * (its prefix reuse included).
 */
#define TEST_PROGRAM "fuzz_batch"
#define TEST_UTIL_FUZZ
#include "test_util.h" /* fail, check_message */

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 32
#define MAX_PROMPTS 48
#define SETTINGS 5

typedef struct {
    runc_model *model;
    runc_tokenizer *tok;
} fixed_model;

static fixed_model fixed[MAX_MODELS];
static int n_fixed;

/* ---- the fixed models ------------------------------------------------------------ */

/* The next colon-separated path of *list (advanced past it) into path; 0 when none is left. */
static int next_path(const char **list, char *path, size_t cap)
{
    const char *end;
    size_t n;
    if (!*list || !**list) return 0;
    end = strchr(*list, ':');
    n = end ? (size_t)(end - *list) : strlen(*list);
    if (n == 0 || n >= cap) {
        fprintf(stderr, "fuzz_batch: an empty or over-long path in RUNC_FUZZ_BATCH\n");
        abort();
    }
    memcpy(path, *list, n);
    path[n] = '\0';
    *list = end ? end + 1 : NULL;
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *list = getenv("RUNC_FUZZ_BATCH");
    char model_path[4096], tok_path[4096];
    runc_error e;
    (void)argc;
    (void)argv;
    while (n_fixed < MAX_MODELS && next_path(&list, model_path, sizeof model_path)) {
        fixed_model *f = &fixed[n_fixed];
        if (!next_path(&list, tok_path, sizeof tok_path)) {
            fprintf(stderr, "fuzz_batch: %s has no tokenizer after it in RUNC_FUZZ_BATCH\n", model_path);
            abort();
        }
        if (runc_model_open(&f->model, model_path, 0, &e) != RUNC_OK ||
            runc_tokenizer_open(&f->tok, tok_path, runc_model_config(f->model)->vocab_size, &e) != RUNC_OK) {
            fprintf(stderr, "fuzz_batch: %s with %s does not load: %s\n", model_path, tok_path, e.message);
            abort();
        }
        n_fixed++;
    }
    if (n_fixed == 0) {
        fprintf(stderr, "fuzz_batch: no models: set RUNC_FUZZ_BATCH to model:tokenizer[:model:tokenizer...]"
                        " (make fuzz-batch does, from runc/fuzz/fuzz_seeds.py's exports)\n");
        abort();
    }
    return 0;
}

/* ---- one input ------------------------------------------------------------------- */

/* runc_solve's results for every prompt: the reference */
typedef struct {
    char *answers; /* n x cap */
    int *n_gen;
    runc_error *errs;
    size_t cap;
} reference;

/* A prompt (at most 60 bytes of it) on stderr, C-escaped, for the report of a difference. */
static void show(const char *what, int i, const char *s)
{
    int k;
    fprintf(stderr, "fuzz_batch: %s %d: \"", what, i);
    for (k = 0; s[k] && k < 60; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s\"\n", s[k] ? "..." : "");
}

/* max_answer: what byte 3 asks for, and whether to set it at all */
static int max_answer_of(unsigned v, int context, int *set)
{
    const int special[16] = {0, -1, INT_MIN, RUNC_MAX_SEQ_LEN, RUNC_MAX_SEQ_LEN + 1, INT_MAX, context - 1, context,
                             context + 1, context - 2, 1, 2, RUNC_DEFAULT_MAX_ANSWER, RUNC_DEFAULT_MAX_ANSWER + 1,
                             -RUNC_MAX_SEQ_LEN, 3};
    *set = v != 0;
    return v < 240 ? (int)v : special[v - 240];
}

/* Batch-solve the prompts with engine settings `s` and compare everything with ref.
 * lp_out gets the confidences (2n floats: means, then minima) unless bit 7 says none; returns
 * whether it did. */
static int run_engine(const fixed_model *f, unsigned s, int context, int max_answer, int set_max,
                      const runc_error *set_ref, const runc_state *st, char **prompts, int n, const reference *ref,
                      float *lp_out)
{
    runc_batch *b = NULL;
    runc_batch_options o;
    runc_error e, se;
    char *answers;
    int *n_gen, i, rc, first = -1, with_lp = !(s & 0x80);
    runc_error *errs;
    size_t cap;

    memset(&o, 0, sizeof o);
    o.threads = 1 + (int)(s & 3) % 3;
    o.slots = (int)(s >> 2) & 7;
    o.kernels = ((s >> 5) & 3) == 3 ? RUNC_KERNELS_AUTO : (int)(s >> 5) & 3;
    o.context = context;
    memset(&e, 0x55, sizeof e);
    rc = runc_batch_open(&b, f->model, f->tok, &o, &e);
    check_message(rc, &e);
    if (rc != RUNC_OK) {
        if (rc == RUNC_E_NOMEM) return 0;
        fail("runc_batch_open refused valid settings", &e);
    }
    if (set_max) {
        memset(&se, 0x55, sizeof se);
        rc = runc_batch_set_max_answer(b, max_answer, &se);
        check_message(rc, &se);
        if (rc != set_ref->code || strcmp(se.message, set_ref->message) != 0) {
            fprintf(stderr, "fuzz_batch: max_answer %d: the state says %s '%s'\n", max_answer,
                    runc_status_name(set_ref->code), set_ref->message);
            fail("runc_batch_set_max_answer differs from runc_state_set_max_answer", &se);
        }
    }
    if (runc_batch_max_answer(b) != runc_state_max_answer(st)) fail("max_answer differs from the state's", &e);
    if (runc_batch_context(b) != runc_state_context(st)) fail("context differs from the state's", &e);
    cap = runc_batch_answer_cap(b);
    if (cap != ref->cap) fail("runc_batch_answer_cap differs from runc_answer_cap", &e);

    answers = (char *)malloc((size_t)n * cap);
    n_gen = (int *)malloc((size_t)n * sizeof *n_gen);
    errs = (runc_error *)malloc((size_t)n * sizeof *errs);
    if (!answers || !n_gen || !errs) abort();
    memset(answers, 'z', (size_t)n * cap);
    memset(errs, 0x55, (size_t)n * sizeof *errs);
    for (i = 0; i < n; i++) n_gen[i] = -7;
    memset(&e, 0x55, sizeof e);
    rc = runc_batch_solve(b, (const char *const *)prompts, n, answers, cap, n_gen, with_lp ? lp_out : NULL,
                          with_lp ? lp_out + n : NULL, errs, &e);
    check_message(rc, &e);

    for (i = 0; i < n; i++) {
        const runc_error *want = &ref->errs[i];
        const char *a = answers + (size_t)i * cap, *ra = ref->answers + (size_t)i * ref->cap;
        check_message(errs[i].code, &errs[i]);
        if (errs[i].code != want->code || strcmp(errs[i].message, want->message) != 0 || strcmp(a, ra) != 0 ||
            n_gen[i] != ref->n_gen[i]) {
            show("prompt", i, prompts[i]);
            fprintf(stderr, "fuzz_batch: %d threads x %d slots (%s), context %d, max_answer %d\n",
                    runc_batch_threads(b), runc_batch_slots(b), runc_batch_kernels(b), runc_batch_context(b),
                    runc_batch_max_answer(b));
            fprintf(stderr, "fuzz_batch: batch  %s '%s', answer '%s', %d tokens\n", runc_status_name(errs[i].code),
                    errs[i].message, a, n_gen[i]);
            fprintf(stderr, "fuzz_batch: single %s '%s', answer '%s', %d tokens\n", runc_status_name(want->code),
                    want->message, ra, ref->n_gen[i]);
            fail("the batch engine differs from runc_solve", &errs[i]);
        }
        if (first < 0 && want->code != RUNC_OK) first = i;
        if (with_lp && want->code == RUNC_OK && !(lp_out[i] <= 0.0f && lp_out[n + i] <= lp_out[i] + 1e-6f)) {
            show("prompt", i, prompts[i]);
            fprintf(stderr, "fuzz_batch: mean %g, min %g\n", (double)lp_out[i], (double)lp_out[n + i]);
            fail("confidence not a log-probability", &errs[i]);
        }
    }
    if (first < 0) {
        if (rc != RUNC_OK) fail("runc_batch_solve failed where every prompt was answered", &e);
    } else {
        char msg[sizeof e.message];
        snprintf(msg, sizeof msg, "prompt %d: %s", first, ref->errs[first].message);
        if (rc != ref->errs[first].code || strcmp(e.message, msg) != 0) {
            fprintf(stderr, "fuzz_batch: want %s '%s'\n", runc_status_name(ref->errs[first].code), msg);
            fail("runc_batch_solve's status is not the lowest failing prompt's", &e);
        }
    }
    free(answers);
    free(n_gen);
    free(errs);
    runc_batch_close(b);
    return with_lp;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fixed_model *f;
    const runc_config *c;
    runc_state *st = NULL;
    runc_error e, set_ref;
    reference ref;
    char *prompts[MAX_PROMPTS];
    float *lp[2];
    int n = 0, i, rc, context, max_answer, set_max, got[2];
    size_t at;

    if (size < SETTINGS) return 0;
    f = &fixed[data[0] % (unsigned)n_fixed];
    c = runc_model_config(f->model);
    context = data[4] == 0 || c->max_seq_len < 3 ? 0 : 2 + (data[4] - 1) % (c->max_seq_len - 1);

    /* the prompts: the rest, split on '\n' */
    at = SETTINGS;
    for (;;) {
        const uint8_t *nl = (const uint8_t *)memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
        prompts[n] = (char *)malloc(len + 1);
        if (!prompts[n]) abort();
        memcpy(prompts[n], data + at, len);
        prompts[n][len] = '\0';
        n++;
        if (!nl || n == MAX_PROMPTS) break;
        at += len + 1;
    }

    /* the reference: runc_solve, prompt by prompt, on one state */
    memset(&e, 0x55, sizeof e);
    rc = runc_state_open(&st, f->model, context, &e);
    check_message(rc, &e);
    if (rc != RUNC_OK) fail("runc_state_open refused a valid context", &e);
    max_answer = max_answer_of(data[3], runc_state_context(st), &set_max);
    memset(&set_ref, 0x55, sizeof set_ref);
    if (set_max) check_message(runc_state_set_max_answer(st, max_answer, &set_ref), &set_ref);
    ref.cap = runc_answer_cap(st, f->tok);
    ref.answers = (char *)malloc((size_t)n * ref.cap);
    ref.n_gen = (int *)malloc((size_t)n * sizeof *ref.n_gen);
    ref.errs = (runc_error *)malloc((size_t)n * sizeof *ref.errs);
    lp[0] = (float *)malloc(2 * (size_t)n * sizeof(float));
    lp[1] = (float *)malloc(2 * (size_t)n * sizeof(float));
    if (!ref.answers || !ref.n_gen || !ref.errs || !lp[0] || !lp[1]) abort();
    for (i = 0; i < n; i++) {
        runc_error *re = &ref.errs[i];
        memset(re, 0x55, sizeof *re);
        ref.n_gen[i] = -7;
        rc = runc_solve(st, f->tok, prompts[i], ref.answers + (size_t)i * ref.cap, ref.cap, &ref.n_gen[i], re);
        check_message(rc, re);
        /* the seed models' weights are small: no overflow */
        if (rc != RUNC_OK && rc != RUNC_E_ARG && rc != RUNC_E_ENCODE && rc != RUNC_E_CONTEXT) {
            show("prompt", i, prompts[i]);
            fail("runc_solve: unexpected status", re);
        }
        if (rc == RUNC_OK && (ref.n_gen[i] < 0 || ref.n_gen[i] > runc_state_max_answer(st) ||
                              ref.n_gen[i] >= runc_state_context(st)))
            fail("runc_solve's generated count", re);
        if (rc != RUNC_OK && (ref.n_gen[i] != 0 || ref.answers[(size_t)i * ref.cap] != '\0'))
            fail("runc_solve failed with an answer", re);
    }

    /* two engine settings; their confidences agree bit for bit */
    got[0] = run_engine(f, data[1], context, max_answer, set_max, &set_ref, st, prompts, n, &ref, lp[0]);
    got[1] = run_engine(f, data[2], context, max_answer, set_max, &set_ref, st, prompts, n, &ref, lp[1]);
    if (got[0] && got[1])
        for (i = 0; i < 2 * n; i++)
            if (memcmp(&lp[0][i], &lp[1][i], sizeof(float)) != 0) {
                show("prompt", i % n, prompts[i % n]);
                fprintf(stderr, "fuzz_batch: %s %.9g vs %.9g (settings 0x%02x, 0x%02x)\n", i < n ? "mean" : "min",
                        (double)lp[0][i], (double)lp[1][i], data[1], data[2]);
                fail("two engine settings give different confidences", &ref.errs[i % n]);
            }

    for (i = 0; i < n; i++) free(prompts[i]);
    free(ref.answers);
    free(ref.n_gen);
    free(ref.errs);
    free(lp[0]);
    free(lp[1]);
    runc_state_close(st);
    return 0;
}
