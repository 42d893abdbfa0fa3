/*
 * test_batch.c - the batch engine against the single-sequence path.
 *
 *   test_batch [N [model.bin model.q8.bin tokenizer.bin]]
 *
 * Random models built in memory (v1 fp32 and v2 int8; tied and untied
 * classifiers; grouped-query attention; widths that are not multiples of 8,
 * Q8_0 groups of 2, 4, 8, 16 and 24) and, when given, real exported models:
 * N problems (default 10000) solved by runc_solve one at a time, then by
 * runc_batch_solve with several thread counts, slot counts and every kernel
 * set (automatic: AVX-512 with VNNI int8 where present; AVX2; portable C). Every answer and every generated-token count must be identical, and
 * the confidences must equal the log-probabilities of runc_generate's greedy
 * tokens. Then the engine's errors: bad options, NULL arguments, prompts that
 * cannot be encoded or do not fit (the error names the lowest bad index, each
 * prompt's status is runc_solve's code and message, the other answers are
 * still right).
 *
 * Prints one line per failure and a closing "N passed, M failed"; exit status
 * 0 only when nothing failed.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#endif

#define TEST_PROGRAM "test_batch"
#include "test_util.h" /* CHECK, n_pass, n_fail, buf and put_*, read_file */
#include "runc_impl.h" /* runc_expf: the engine's exp, for its confidences bit for bit */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- random numbers ---------------------------------------------------------- */

static unsigned long long rng = 0x9E3779B97F4A7C15ull;

static uint32_t rand_u32(void)
{
    return (uint32_t)(xorshift64s(&rng) >> 32);
}

static float frand(void) /* uniform [-1, 1) */
{
    return (float)((double)rand_u32() / 2147483648.0 - 1.0);
}

/* ---- a digits tokenizer and random model files ----------------------------- */

static const char *const pieces[] = {"<unk>", "\n<s>\n", "\n</s>\n", " ", "0", "1", "2", "3", "4", "5",
                                     "6",     "7",       "8",        "9", "+", "-", "*", "/", "=", ".",
                                     " =",    "00",      ".0",       ".00", "10", "99"};
#define VOCAB ((int)(sizeof pieces / sizeof pieces[0]))

static buf tokenizer_file(void)
{
    buf b = {NULL, 0, 0};
    int i;
    put_i32(&b, 6);
    for (i = 0; i < VOCAB; i++) put_piece(&b, pieces[i], i < 3 ? 0.0f : (float)-(i % 7) - 1.0f);
    return b;
}

typedef struct {
    const char *name;
    int version, dim, hidden, layers, heads, kv_heads, seq, tied, gs;
} shape;

static buf model_file(const shape *sh)
{
    buf b = {NULL, 0, 0};
    const int D = sh->dim, H = sh->hidden, L = sh->layers, kv = sh->dim / sh->heads * sh->kv_heads;
    const int32_t cfg[7] = {D, H, L, sh->heads, sh->kv_heads, VOCAB, sh->seq};
    const float wscale = 1.5f / sqrtf((float)D);
    int k, l;
    put_model_header(&b, sh->version, cfg, sh->tied, sh->gs, 256);
    for (k = 0; k < 2 * L * D + D; k++) put_f32(&b, 1.0f + 0.3f * frand());   /* norms */
    put_rand_matrix(&b, (size_t)VOCAB * D, 1.0f, sh->version, sh->gs, frand); /* embedding */
    {
        const size_t sizes[7] = {(size_t)D * D, (size_t)kv * D, (size_t)kv * D, (size_t)D * D,
                                 (size_t)H * D, (size_t)D * H, (size_t)H * D};
        for (k = 0; k < 7; k++)
            for (l = 0; l < L; l++)
                put_rand_matrix(&b, sizes[k], k == 5 ? 1.5f / sqrtf((float)H) : wscale, sh->version, sh->gs, frand);
    }
    if (!sh->tied) put_rand_matrix(&b, (size_t)VOCAB * D, 1.0f, sh->version, sh->gs, frand);
    return b;
}

/* ---- problems -------------------------------------------------------------------- */

/* "A op B =" with operands of 1 to 3 digits, sometimes other lengths, so
 * that prompts of different lengths mix. */
static char **make_prompts(int n, int max_len)
{
    static const char ops[] = "+-*/";
    char **p = (char **)malloc((size_t)n * sizeof *p);
    int i;
    if (!p) exit(2);
    for (i = 0; i < n; i++) {
        p[i] = (char *)malloc((size_t)max_len + 1);
        if (!p[i]) exit(2);
        switch (rand_u32() % 8) {
        case 0:
            snprintf(p[i], (size_t)max_len + 1, "%u =", rand_u32() % 100);
            break;
        case 1:
            snprintf(p[i], (size_t)max_len + 1, "%u %c %u %c %u =", rand_u32() % 10, ops[rand_u32() % 4],
                     rand_u32() % 10, ops[rand_u32() % 4], rand_u32() % 10);
            break;
        case 2:
            snprintf(p[i], (size_t)max_len + 1, "%u.00 %c %u =", rand_u32() % 1000, ops[rand_u32() % 4],
                     rand_u32() % 1000);
            break;
        default:
            snprintf(p[i], (size_t)max_len + 1, "%u %c %u =", rand_u32() % 100, ops[rand_u32() % 4],
                     rand_u32() % 100);
        }
    }
    return p;
}

static void free_prompts(char **p, int n)
{
    int i;
    for (i = 0; i < n; i++) free(p[i]);
    free(p);
}

/* ---- the comparison ------------------------------------------------------------ */

typedef struct {
    char *answers; /* n x cap */
    int *n_gen;
    size_t cap;
} reference;

static reference solve_single(const runc_model *m, const runc_tokenizer *tok, char **prompts, int n)
{
    reference ref;
    runc_state *st = NULL;
    runc_error e;
    int i, rc = runc_state_open(&st, m, 0, &e);
    CHECK(rc == RUNC_OK, "runc_state_open: %s", e.message);
    ref.cap = runc_answer_cap(st, tok);
    ref.answers = (char *)calloc((size_t)n, ref.cap);
    ref.n_gen = (int *)calloc((size_t)n, sizeof(int));
    if (!ref.answers || !ref.n_gen) exit(2);
    for (i = 0; i < n; i++) {
        rc = runc_solve(st, tok, prompts[i], ref.answers + (size_t)i * ref.cap, ref.cap, &ref.n_gen[i], &e);
        if (rc != RUNC_OK) {
            CHECK(0, "runc_solve(%s): %s", prompts[i], e.message);
            break;
        }
    }
    runc_state_close(st);
    return ref;
}

/* The greedy tokens' log-probabilities from runc_generate: mean and min,
 * with the closing EOS when there is one. */
static void greedy_confidence(const runc_model *m, const runc_tokenizer *tok, const char *prompt, float *mean,
                              float *min)
{
    runc_state *st = NULL;
    runc_sampler *smp = NULL;
    runc_error e;
    int ids[256], *out, n_ids = 0, n_out = 0, context, i, count;
    float *lps, sum = 0.0f, lo = 0.0f;
    runc_state_open(&st, m, 0, &e);
    runc_sampler_open(&smp, runc_model_config(m)->vocab_size, 0.0f, 0.9f, 1, &e);
    context = runc_state_context(st);
    /* up to a whole context of generated tokens (a steps model's answers are long) */
    out = (int *)malloc((size_t)context * sizeof *out);
    lps = (float *)malloc((size_t)context * sizeof *lps);
    if (!out || !lps) exit(2);
    runc_encode(tok, prompt, 1, 0, ids, 256, &n_ids, &e);
    /* stop = -1 so that the EOS itself is generated (and its log-probability returned) */
    runc_generate(st, smp, ids, n_ids, context - n_ids, -1, out, lps, &n_out, &e);
    count = n_out;
    for (i = 0; i < n_out; i++)
        if (out[i] == RUNC_TOKEN_EOS) {
            count = i + 1;
            break;
        }
    for (i = 0; i < count; i++) {
        sum += lps[i];
        if (i == 0 || lps[i] < lo) lo = lps[i];
    }
    *mean = count ? sum / (float)count : 0.0f;
    *min = lo;
    free(out);
    free(lps);
    runc_sampler_close(smp);
    runc_state_close(st);
}

/* The engine's confidence of a problem, bit for bit, from runc_forward's
 * logits: each step's log-probability of the argmax is -log(sum of
 * runc_expf(logit - max)) in float, summed in float, as rb_worker_run and
 * rb_finish do. Any bit of difference in a logit of the batch kernels shows
 * here, where a greedy answer would hide it. */
static void engine_confidence(const runc_model *m, const runc_tokenizer *tok, const char *prompt, float *mean,
                              float *min)
{
    runc_state *st = NULL;
    runc_error e;
    const float *lg;
    int ids[256], n_ids = 0, context, V = runc_model_config(m)->vocab_size, pos, ng = 0, count = 0, i, tokn;
    float sum = 0.0f, lo = 0.0f;
    runc_state_open(&st, m, 0, &e);
    context = runc_state_context(st);
    runc_encode(tok, prompt, 1, 0, ids, 256, &n_ids, &e);
    for (pos = 0; pos < n_ids - 1; pos++) runc_forward(st, ids[pos], pos, &lg, &e);
    tokn = ids[n_ids - 1];
    for (;;) {
        float max, s = 0.0f, lp;
        int best = 0;
        runc_forward(st, tokn, pos, &lg, &e);
        for (i = 1; i < V; i++)
            if (lg[i] > lg[best]) best = i;
        max = lg[0];
        for (i = 1; i < V; i++)
            if (lg[i] > max) max = lg[i];
        for (i = 0; i < V; i++) s += runc_expf(lg[i] - max);
        lp = -logf(s);
        sum += lp;
        if (ng == 0 || lp < lo) lo = lp;
        if (best == RUNC_TOKEN_EOS) {
            count = ng + 1;
            break;
        }
        ng++;
        if (n_ids + ng >= context) {
            count = ng;
            break;
        }
        tokn = best;
        pos++;
    }
    *mean = count ? sum / (float)count : 0.0f;
    *min = lo;
    runc_state_close(st);
}

static double now(void)
{
    return (double)clock() / CLOCKS_PER_SEC;
}

/* Batch-solve `prompts` with the given options; 1 when every answer and count
 * equals the reference. The confidences of the first problems must equal the
 * single path's bit for bit (engine_confidence); with check_conf, also
 * runc_generate's log-probabilities (computed in double: to 1e-4). */
static int compare(const char *what, const runc_model *m, const runc_tokenizer *tok, char **prompts, int n,
                   const reference *ref, int threads, int slots, int kernels, int check_conf)
{
    runc_batch *b = NULL;
    runc_batch_options o;
    runc_error e;
    char *answers;
    int *n_gen, i, bad = 0, rc;
    float *mean = NULL, *min = NULL;
    size_t cap;
    double t0;
    memset(&o, 0, sizeof o);
    o.threads = threads;
    o.slots = slots;
    o.kernels = kernels;
    rc = runc_batch_open(&b, m, tok, &o, &e);
    CHECK(rc == RUNC_OK, "%s: runc_batch_open: %s", what, e.message);
    if (rc != RUNC_OK) return 0;
    cap = runc_batch_answer_cap(b);
    CHECK(cap == ref->cap, "%s: answer caps differ: %zu vs %zu", what, cap, ref->cap);
    answers = (char *)malloc((size_t)n * cap);
    n_gen = (int *)malloc((size_t)n * sizeof *n_gen);
    mean = (float *)malloc((size_t)n * sizeof *mean);
    min = (float *)malloc((size_t)n * sizeof *min);
    if (!answers || !n_gen || !mean || !min) exit(2);
    t0 = now();
    rc = runc_batch_solve(b, (const char *const *)prompts, n, answers, cap, n_gen, mean, min, NULL, &e);
    CHECK(rc == RUNC_OK, "%s: runc_batch_solve: %s", what, e.message);
    for (i = 0; i < n && rc == RUNC_OK; i++) {
        if (strcmp(answers + (size_t)i * cap, ref->answers + (size_t)i * ref->cap) != 0 || n_gen[i] != ref->n_gen[i]) {
            if (bad < 5)
                printf("  %s: problem %d '%s': batch '%s' (%d tokens), single '%s' (%d tokens)\n", what, i, prompts[i],
                       answers + (size_t)i * cap, n_gen[i], ref->answers + (size_t)i * ref->cap, ref->n_gen[i]);
            bad++;
        }
    }
    CHECK(rc == RUNC_OK && bad == 0, "%s: %d of %d answers differ from runc_solve's", what, bad, n);
    if (check_conf && rc == RUNC_OK) {
        int k, worst = -1;
        float err = 0.0f;
        for (k = 0; k < n && k < 50; k++) { /* single-path reruns: a steps model answers 70+ tokens */
            float gm, gn, d;
            greedy_confidence(m, tok, prompts[k], &gm, &gn);
            d = fabsf(gm - mean[k]) + fabsf(gn - min[k]);
            if (d > err) {
                err = d;
                worst = k;
            }
            CHECK(mean[k] <= 0.0f && min[k] <= mean[k] + 1e-6f, "%s: confidence of '%s': mean %g, min %g", what,
                  prompts[k], (double)mean[k], (double)min[k]);
        }
        CHECK(err < 1e-4f, "%s: confidence differs from runc_generate's log-probabilities by %g (problem %d)", what,
              (double)err, worst);
    }
    if (rc == RUNC_OK) {
        int k;
        for (k = 0, bad = 0; k < n && k < 60; k++) {
            float em, en;
            engine_confidence(m, tok, prompts[k], &em, &en);
            if (em != mean[k] || en != min[k]) {
                if (bad < 3)
                    printf("  %s: '%s': batch confidence (%.9g, %.9g), runc_forward's logits give (%.9g, %.9g)\n", what,
                           prompts[k], (double)mean[k], (double)min[k], (double)em, (double)en);
                bad++;
            }
        }
        CHECK(bad == 0, "%s: %d confidences differ in a bit from the single path's logits", what, bad);
    }
    if (getenv("TEST_BATCH_VERBOSE"))
        printf("  %s: %s, %d threads x %d slots: %d problems in %.2f s CPU\n", what, runc_batch_kernels(b),
               runc_batch_threads(b), runc_batch_slots(b), n, now() - t0);
    free(answers);
    free(n_gen);
    free(mean);
    free(min);
    runc_batch_close(b);
    return bad == 0;
}

/* Tokens the engine runs for prompts[0..n) (1 thread, `slots` slots); answers must match ref's. */
static long long tokens_run(const char *what, const runc_model *m, const runc_tokenizer *tok, const char **prompts,
                            int n, int slots, const char *const *want)
{
    runc_batch *b = NULL;
    runc_batch_options o;
    runc_error e;
    char *answers;
    size_t cap;
    long long tokens = -1;
    int i;
    memset(&o, 0, sizeof o);
    o.threads = 1;
    o.slots = slots;
    if (runc_batch_open(&b, m, tok, &o, &e) != RUNC_OK) {
        CHECK(0, "%s: engine: %s", what, e.message);
        return -1;
    }
    cap = runc_batch_answer_cap(b);
    answers = (char *)malloc((size_t)n * cap);
    if (!answers) exit(2);
    if (runc_batch_solve(b, prompts, n, answers, cap, NULL, NULL, NULL, NULL, &e) == RUNC_OK) {
        tokens = runc_batch_tokens(b);
        for (i = 0; i < n; i++)
            CHECK(strcmp(answers + (size_t)i * cap, want[i]) == 0, "%s: '%s' answered '%s', runc_solve '%s'", what,
                  prompts[i], answers + (size_t)i * cap, want[i]);
    } else {
        CHECK(0, "%s: solve: %s", what, e.message);
    }
    free(answers);
    runc_batch_close(b);
    return tokens;
}

/* Prefix reuse happens, as much as it may (that it changes no answer is
 * compare's check: every configuration against runc_solve). A prompt solved
 * again runs only its last prompt token and its answer: its first np - 1
 * positions come from a cache. With 2 slots, [a, c, a]: the first fill finds
 * no cache, so a and c run in full; the second a takes the slot that frees
 * first, its own (a's cache) or c's, and then copies a's np - 1 positions from
 * the other slot, which by then has run at least c's np >= a's np - 1 tokens. */
static void check_reuse(const char *name, const runc_model *m, const runc_tokenizer *tok)
{
    const char *a = "12 + 34 =", *c = "98 - 76 =";
    const char *one[1], *three[3], *want[3];
    char *wa = NULL, *wc = NULL, what[160];
    int ids[32], np = 0, ok;
    long long ta, tc, t3;
    runc_state *st = NULL;
    runc_error e;
    size_t cap;
    ok = runc_state_open(&st, m, 0, &e) == RUNC_OK;
    cap = ok ? runc_answer_cap(st, tok) : 0;
    wa = (char *)malloc(cap + 1);
    wc = (char *)malloc(cap + 1);
    if (!wa || !wc) exit(2);
    if (!ok || runc_solve(st, tok, a, wa, cap, NULL, &e) != RUNC_OK || runc_solve(st, tok, c, wc, cap, NULL, &e) != RUNC_OK ||
        runc_encode(tok, a, 1, 0, ids, 32, &np, &e) != RUNC_OK) {
        CHECK(0, "%s: reuse setup: %s", name, e.message);
        runc_state_close(st);
        free(wa);
        free(wc);
        return;
    }
    runc_state_close(st);
    snprintf(what, sizeof what, "%s, prefix reuse", name);
    one[0] = a;
    want[0] = wa;
    ta = tokens_run(what, m, tok, one, 1, 1, want);
    one[0] = c;
    want[0] = wc;
    tc = tokens_run(what, m, tok, one, 1, 1, want);
    three[0] = a, three[1] = a;
    want[0] = wa, want[1] = wa;
    t3 = tokens_run(what, m, tok, three, 2, 1, want);
    CHECK(t3 == ta + ta - (np - 1), "%s, 1 slot: %lld tokens run, want %lld + %lld - %d", name, t3, ta, ta, np - 1);
    three[1] = c, three[2] = a;
    want[1] = wc, want[2] = wa;
    t3 = tokens_run(what, m, tok, three, 3, 2, want);
    CHECK(t3 == ta + tc + ta - (np - 1), "%s, 2 slots: %lld tokens run, want %lld + %lld + %lld - %d", name, t3, ta,
          tc, ta, np - 1);
    free(wa);
    free(wc);
}

static void test_model(const char *name, const unsigned char *model_bytes, size_t model_size,
                       const unsigned char *tok_bytes, size_t tok_size, int n)
{
    runc_model *m = NULL;
    runc_tokenizer *tok = NULL;
    runc_error e;
    char **prompts;
    reference ref;
    char what[128];
    int rc, max_len;
    rc = runc_model_open_buffer(&m, model_bytes, model_size, RUNC_OPEN_COPY, &e);
    CHECK(rc == RUNC_OK, "%s: open: %s", name, e.message);
    if (rc != RUNC_OK) return;
    rc = runc_tokenizer_open_buffer(&tok, tok_bytes, tok_size, runc_model_config(m)->vocab_size, &e);
    CHECK(rc == RUNC_OK, "%s: tokenizer: %s", name, e.message);
    if (rc != RUNC_OK) {
        runc_model_close(m);
        return;
    }
    /* prompts that fit: the longest generated one is 16 bytes, up to 17 tokens with BOS */
    max_len = runc_model_config(m)->max_seq_len >= 20 ? 16 : 8;
    prompts = make_prompts(n, max_len);
    ref = solve_single(m, tok, prompts, n);

    snprintf(what, sizeof what, "%s, default engine", name);
    compare(what, m, tok, prompts, n, &ref, 0, 0, RUNC_KERNELS_AUTO, 1);
    snprintf(what, sizeof what, "%s, AVX2 kernels at most", name);
    compare(what, m, tok, prompts, n < 2000 ? n : 2000, &ref, 2, 6, RUNC_KERNELS_AVX2, 0);
    snprintf(what, sizeof what, "%s, portable kernels", name);
    compare(what, m, tok, prompts, n < 2000 ? n : 2000, &ref, 2, 7, RUNC_KERNELS_PORTABLE, 0);
    snprintf(what, sizeof what, "%s, 1 thread x 1 slot", name);
    compare(what, m, tok, prompts, n < 500 ? n : 500, &ref, 1, 1, RUNC_KERNELS_AUTO, 0);
    snprintf(what, sizeof what, "%s, 3 threads x 5 slots", name);
    compare(what, m, tok, prompts, n < 3000 ? n : 3000, &ref, 3, 5, RUNC_KERNELS_AUTO, 0);
    snprintf(what, sizeof what, "%s, 2 threads x 2 slots, 3 problems", name);
    compare(what, m, tok, prompts, 3, &ref, 2, 2, RUNC_KERNELS_AUTO, 0);
    check_reuse(name, m, tok);

    free(ref.answers);
    free(ref.n_gen);
    free_prompts(prompts, n);
    runc_tokenizer_close(tok);
    runc_model_close(m);
}

/* ---- errors ------------------------------------------------------------------------ */

static void test_errors(void)
{
    const shape sh = {"errors", 1, 16, 40, 1, 2, 2, 12, 1, 0};
    buf mf = model_file(&sh), tf = tokenizer_file();
    runc_model *m = NULL;
    runc_tokenizer *tok = NULL, *other = NULL;
    runc_batch *b = NULL;
    runc_batch_options o;
    runc_error e, errs[8];
    char answers[8][256];
    const char *prompts[8];
    int rc, n_gen[8];
    float mean[8], min[8];
    size_t cap;
    runc_state *st = NULL;
    char want[256];

    rc = runc_model_open_buffer(&m, mf.p, mf.n, RUNC_OPEN_COPY, &e);
    CHECK(rc == RUNC_OK, "errors: open: %s", e.message);
    rc = runc_tokenizer_open_buffer(&tok, tf.p, tf.n, VOCAB, &e);
    CHECK(rc == RUNC_OK, "errors: tokenizer: %s", e.message);
    if (!m || !tok) return;

    /* options */
    memset(&o, 0, sizeof o);
    CHECK(runc_batch_open(NULL, m, tok, NULL, &e) == RUNC_E_ARG, "NULL output pointer");
    CHECK(runc_batch_open(&b, NULL, tok, NULL, &e) == RUNC_E_ARG && b == NULL, "NULL model");
    CHECK(runc_batch_open(&b, m, NULL, NULL, &e) == RUNC_E_ARG && b == NULL, "NULL tokenizer");
    o.threads = -1;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG && strstr(e.message, "threads"), "threads -1: %s",
          e.message);
    o.threads = RUNC_BATCH_MAX_THREADS + 1;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG, "threads too many");
    o.threads = 1;
    o.slots = -3;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG && strstr(e.message, "slots"), "slots -3");
    o.slots = 0;
    o.context = 13;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG && strstr(e.message, "context"), "context 13 > 12");
    o.context = -1;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG, "context -1");
    o.context = 0;
    o.kernels = 7;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG && strstr(e.message, "kernels"), "kernels 7");
    o.kernels = -1;
    CHECK(runc_batch_open(&b, m, tok, &o, &e) == RUNC_E_ARG, "kernels -1");
    o.kernels = 0;
    {
        const char *small[] = {"<unk>", "\n<s>\n", "\n</s>\n", " "};
        buf sb = {NULL, 0, 0};
        int i;
        put_i32(&sb, 6);
        for (i = 0; i < 4; i++) {
            put_f32(&sb, 0.0f);
            put_i32(&sb, (int32_t)strlen(small[i]));
            put(&sb, small[i], strlen(small[i]));
        }
        rc = runc_tokenizer_open_buffer(&other, sb.p, sb.n, 4, &e);
        CHECK(rc == RUNC_OK, "small tokenizer: %s", e.message);
        CHECK(runc_batch_open(&b, m, other, NULL, &e) == RUNC_E_VOCAB && b == NULL, "vocabulary mismatch: %s",
              e.message);
        runc_tokenizer_close(other);
        free(sb.p);
    }

    o.threads = 2;
    o.slots = 2;
    rc = runc_batch_open(&b, m, tok, &o, &e);
    CHECK(rc == RUNC_OK, "open: %s", e.message);
    if (rc != RUNC_OK) return;
    CHECK(runc_batch_threads(b) == 2 && runc_batch_slots(b) == 2 && runc_batch_context(b) == 12,
          "accessors: %d %d %d", runc_batch_threads(b), runc_batch_slots(b), runc_batch_context(b));
    CHECK(runc_batch_bytes(b) > 0 && runc_batch_kernels(b)[0] != '\0', "bytes, kernels");
    cap = runc_batch_answer_cap(b);
    CHECK(cap <= sizeof answers[0], "answer cap %zu", cap);

    /* NULL arguments and empty calls */
    CHECK(runc_batch_solve(NULL, prompts, 1, answers[0], cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG, "NULL batch");
    CHECK(runc_batch_solve(b, NULL, 1, answers[0], cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG, "NULL prompts");
    prompts[0] = "1 + 1 =";
    CHECK(runc_batch_solve(b, prompts, 1, NULL, cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG, "NULL answers");
    CHECK(runc_batch_solve(b, prompts, -1, answers[0], cap, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG, "n -1");
    CHECK(runc_batch_solve(b, prompts, 1, answers[0], 0, NULL, NULL, NULL, NULL, &e) == RUNC_E_ARG, "cap 0");
    CHECK(runc_batch_solve(b, prompts, 0, NULL, 0, NULL, NULL, NULL, NULL, &e) == RUNC_OK, "n 0 is fine");

    /* bad prompts among good ones: the lowest bad index is named, the rest are
     * solved, and every prompt's status comes back as data */
    runc_state_open(&st, m, 0, &e);
    prompts[0] = "2 + 2 =";
    prompts[1] = "12 x 3 =";                        /* 'x' is not in the vocabulary */
    prompts[2] = "3 * 3 =";
    prompts[3] = "1234567890 + 1234567890 =";       /* longer than the context */
    prompts[4] = NULL;
    prompts[5] = "9 - 1 =";
    memset(answers, 'z', sizeof answers);
    memset(errs, 'z', sizeof errs);
    rc = runc_batch_solve(b, prompts, 6, answers[0], sizeof answers[0], n_gen, mean, min, errs, &e);
    CHECK(rc == RUNC_E_ENCODE && strncmp(e.message, "prompt 1: ", 10) == 0, "bad prompts: %s (%s)", e.message,
          runc_status_name(rc));
    CHECK(answers[1][0] == '\0' && answers[3][0] == '\0' && answers[4][0] == '\0' && n_gen[1] == 0,
          "failed prompts get empty answers");
    {
        int i, idx[3] = {0, 2, 5};
        for (i = 0; i < 3; i++) {
            runc_solve(st, tok, prompts[idx[i]], want, sizeof want, NULL, &e);
            CHECK(strcmp(want, answers[idx[i]]) == 0, "good prompt %d among bad ones: '%s' vs '%s'", idx[i],
                  answers[idx[i]], want);
            CHECK(errs[idx[i]].code == RUNC_OK && errs[idx[i]].message[0] == '\0', "prompt %d's status: %d '%.40s'",
                  idx[i], errs[idx[i]].code, errs[idx[i]].message);
        }
        /* the failing ones: runc_solve's codes and messages, one prompt each */
        idx[0] = 1;
        idx[1] = 3;
        for (i = 0; i < 2; i++) {
            rc = runc_solve(st, tok, prompts[idx[i]], want, sizeof want, NULL, &e);
            CHECK(errs[idx[i]].code == rc && strcmp(errs[idx[i]].message, e.message) == 0,
                  "prompt %d's status: %s '%s', runc_solve's %s '%s'", idx[i], runc_status_name(errs[idx[i]].code),
                  errs[idx[i]].message, runc_status_name(rc), e.message);
        }
        CHECK(errs[1].code == RUNC_E_ENCODE && strstr(errs[1].message, "'x'"), "prompt 1's status: %s",
              errs[1].message);
        CHECK(errs[3].code == RUNC_E_CONTEXT, "prompt 3's status: %s", runc_status_name(errs[3].code));
        CHECK(errs[4].code == RUNC_E_ARG && strcmp(errs[4].message, "NULL prompt") == 0, "prompt 4's status: %s",
              errs[4].message);
    }
    prompts[0] = "1234567890 + 1234567890 =";
    rc = runc_batch_solve(b, prompts, 1, answers[0], sizeof answers[0], NULL, NULL, NULL, NULL, &e);
    CHECK(rc == RUNC_E_CONTEXT && strstr(e.message, "prompt 0: ") && strstr(e.message, "context"),
          "too long: %s", e.message);
    {
        /* far too long for the encoding scratch: refused before encoding */
        char *huge = (char *)malloc(100000);
        memset(huge, '1', 99999);
        huge[99999] = '\0';
        prompts[0] = huge;
        rc = runc_batch_solve(b, prompts, 1, answers[0], sizeof answers[0], NULL, NULL, NULL, NULL, &e);
        CHECK(rc == RUNC_E_CONTEXT, "huge prompt: %s", e.message);
        free(huge);
    }
    /* a prompt that fits exactly up to context - 1 tokens still gets an answer */
    prompts[0] = "1 2 3 4 5";  /* BOS + 10 tokens = 11 of 12 */
    rc = runc_batch_solve(b, prompts, 1, answers[0], sizeof answers[0], n_gen, NULL, NULL, NULL, &e);
    runc_solve(st, tok, prompts[0], want, sizeof want, NULL, &e);
    CHECK(rc == RUNC_OK && strcmp(answers[0], want) == 0 && n_gen[0] <= 1, "prompt filling the context: %s",
          e.message);
    /* the engine is reusable after errors */
    prompts[0] = "4 * 4 =";
    rc = runc_batch_solve(b, prompts, 1, answers[0], sizeof answers[0], NULL, NULL, NULL, NULL, &e);
    runc_solve(st, tok, prompts[0], want, sizeof want, NULL, &e);
    CHECK(rc == RUNC_OK && strcmp(answers[0], want) == 0 && runc_batch_tokens(b) > 0, "reuse: %s", e.message);

    runc_state_close(st);
    runc_batch_close(b);
    runc_batch_close(NULL);
    runc_tokenizer_close(tok);
    runc_model_close(m);
    free(mf.p);
    free(tf.p);
}

/* ---- main -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const shape shapes[] = {
        /* name, version, dim, hidden, layers, heads, kv_heads, seq, tied, gs */
        {"fp32 dim 64, hidden 172, 8 heads", 1, 64, 172, 2, 8, 8, 24, 1, 0},
        {"fp32 dim 24, hidden 68, GQA 6/2, untied", 1, 24, 68, 2, 6, 2, 20, 0, 0},
        {"fp32 dim 48, hidden 128, 3 heads of 16", 1, 48, 128, 1, 3, 3, 24, 1, 0},
        {"int8 dim 64, hidden 172, groups of 4", 2, 64, 172, 2, 8, 8, 24, 1, 4},
        {"int8 dim 32, hidden 96, GQA 4/2, groups of 16, untied", 2, 32, 96, 2, 4, 2, 20, 0, 16},
        {"int8 dim 48, hidden 72, groups of 24", 2, 48, 72, 1, 6, 6, 24, 1, 24},
        {"int8 dim 16, hidden 40, groups of 2", 2, 16, 40, 1, 2, 2, 16, 1, 2},
        {"int8 dim 20, hidden 54, groups of 2 (rows end in part-vectors)", 2, 20, 54, 1, 2, 2, 16, 1, 2},
        {"int8 dim 40, hidden 120, groups of 8", 2, 40, 120, 2, 5, 5, 24, 1, 8},
    };
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    size_t i;
    buf tf = tokenizer_file();
    if (n < 3) n = 3;
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        buf mf = model_file(&shapes[i]);
        /* the full count on the first shape (and the real models below), fewer on the others */
        test_model(shapes[i].name, mf.p, mf.n, tf.p, tf.n, i == 0 ? n : (n < 1000 ? n : 1000));
        free(mf.p);
    }
    if (argc > 4) { /* real exported models: model.bin model.q8.bin tokenizer.bin */
        size_t tn = 0, mn = 0;
        unsigned char *tb = read_file(argv[4], &tn);
        int k;
        CHECK(tb != NULL, "cannot read %s", argv[4]);
        for (k = 2; k <= 3 && tb; k++) {
            unsigned char *mb = read_file(argv[k], &mn);
            CHECK(mb != NULL, "cannot read %s", argv[k]);
            if (mb) test_model(argv[k], mb, mn, tb, tn, n);
            free(mb);
        }
        free(tb);
    }
    test_errors();
    free(tf.p);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
