/*
 * fuzz_model.c - libFuzzer harness for the model loader (runc_model_open_buffer)
 * and, when the bytes load, a few forward steps and samples.
 *
 *   make fuzz-model FUZZ_SECONDS=60      (runc/fuzz/fuzz.mk; seeds from real exports)
 *
 * Built with clang -fsanitize=fuzzer,address,undefined: any out-of-bounds read,
 * overflow, undefined behaviour, leak or abort() below is a crash. Beyond
 * "no crash", the harness checks the loader's contract and aborts on a breach:
 * a model pointer exactly on success, a NUL-terminated one-line message on
 * failure, runc_parse_header agreeing with the open, and the header's implied
 * size equal to the input's. Inputs of odd length are opened from a
 * misaligned copy (the loader's copy path); files with non-finite weights are
 * also run unchecked (RUNC_OPEN_NO_WEIGHT_CHECK), where sampled ids must
 * still be in range.
 */
#define TEST_PROGRAM "fuzz_model"
#define TEST_UTIL_FUZZ
#include "test_util.h" /* fail, check_message, buf, put_i32, put_piece */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CONTEXT 4   /* positions run per input: enough for attention over several */

/* check_message (test_util.h), and the returned status has a name */
static void check_status(int rc, const runc_error *e)
{
    check_message(rc, e);
    if (strcmp(runc_status_name(rc), "RUNC_E_UNKNOWN") == 0) fail("status without a name", e);
}

/* runc_solve (encode, greedy generation, decode) with a made-up tokenizer of the model's
 * vocabulary size: control pieces, then the printable ASCII characters (" " first), then
 * two-character pieces, all distinct. The prompt comes from the input's last bytes. */
static void solve_with_tokenizer(runc_state *st, int vocab, const uint8_t *data, size_t size)
{
    static const char *const control[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    buf file = {NULL, 0, 0};
    size_t k;
    runc_tokenizer *tok = NULL;
    runc_error e;
    char prompt[9], *answer;
    int i, rc, gen = -1;
    if (vocab > 4096) return; /* keep each input fast */
    put_i32(&file, 6);        /* max_token_length */
    for (i = 0; i < vocab; i++) {
        char piece[8];
        if (i < 3) strcpy(piece, control[i]);
        else if (i - 3 < 95) piece[0] = (char)(0x20 + (i - 3)), piece[1] = '\0';
        else piece[0] = (char)(0x21 + (i - 98) % 94), piece[1] = (char)(0x21 + (i - 98) / 94 % 94), piece[2] = '\0';
        if (i >= 98 + 94 * 94) snprintf(piece, sizeof piece, "#%d", i); /* not reached (vocab <= 4096) */
        put_piece(&file, piece, -(float)(i % 7));
    }
    rc = runc_tokenizer_open_buffer(&tok, file.p, file.n, vocab, &e);
    free(file.p);
    if (rc != RUNC_OK) fail("made-up tokenizer does not load", &e);
    /* 0-2 characters: with BOS and the dummy prefix the prompt fits the (at most 4) positions */
    for (k = 0; k < (size_t)(data[size - 1] % 3); k++) prompt[k] = (char)(0x21 + data[(size - 2 - k) % size] % 94);
    prompt[k] = '\0';
    answer = (char *)malloc(runc_answer_cap(st, tok));
    if (!answer) abort();
    rc = runc_solve(st, tok, prompt, answer, runc_answer_cap(st, tok), &gen, &e);
    check_status(rc, &e);
    /* an empty prompt is refused; weights that overflow (or NaN ones, unchecked) stop the solve */
    if (rc != RUNC_OK && rc != RUNC_E_ENCODE && rc != RUNC_E_CONTEXT && rc != RUNC_E_VOCAB && rc != RUNC_E_NONFINITE &&
        !(rc == RUNC_E_ARG && k == 0))
        fail("runc_solve", &e);
    if (rc == RUNC_OK && (gen < 0 || gen >= runc_state_context(st))) fail("runc_solve generated count", &e);
    free(answer);
    runc_tokenizer_close(tok);
}

static void run_model(const runc_model *m, const uint8_t *data, size_t size, int checked)
{
    const runc_config *c = runc_model_config(m);
    runc_state *st = NULL;
    runc_sampler *smp = NULL;
    runc_error e;
    int ctx = c->max_seq_len < FUZZ_CONTEXT ? c->max_seq_len : FUZZ_CONTEXT;
    int tokens[FUZZ_CONTEXT], out[FUZZ_CONTEXT], n_out = -1, pos, rc, tok;
    const float *logits = NULL;

    if (runc_state_open(&st, m, ctx, &e) != RUNC_OK) {
        if (e.code != RUNC_E_NOMEM) fail("state_open refused a loaded model", &e);
        return;
    }
    /* token ids taken from the file's last bytes, so the fuzzer steers them */
    for (pos = 0; pos < ctx; pos++) {
        uint32_t v = 0;
        size_t k;
        for (k = 0; k < 4 && 4 * (size_t)pos + k < size; k++) v = v << 8 | data[size - 1 - 4 * (size_t)pos - k];
        tokens[pos] = (int)(v % (uint32_t)c->vocab_size);
        rc = runc_forward(st, tokens[pos], pos, &logits, &e);
        if (rc != RUNC_OK || !logits) fail("forward failed on a loaded model", &e);
    }
    if (runc_forward(st, 0, ctx, &logits, &e) != RUNC_E_CONTEXT) fail("forward past the context", &e);
    if (runc_forward(st, c->vocab_size, 0, &logits, &e) != RUNC_E_ARG) fail("forward of a token past vocab", &e);

    /* sample: temperature and top-p from the header's bytes */
    rc = runc_sampler_open(&smp, c->vocab_size, (float)(data[8] % 4) * 0.5f, (float)(data[9] % 5) * 0.25f,
                           (unsigned long long)size, &e);
    if (rc != RUNC_OK) fail("sampler_open", &e);
    if (runc_forward(st, tokens[0], 0, &logits, &e) != RUNC_OK) fail("forward at 0", &e);
    {
        float lp;
        if (runc_sample(smp, logits, &tok, &lp) != RUNC_OK || tok < 0 || tok >= c->vocab_size)
            fail("sampled id out of range", &e);
    }
    /* generation over the whole context, stopping at nothing */
    if (ctx >= 2) {
        float lps[FUZZ_CONTEXT];
        int i;
        rc = runc_generate(st, smp, tokens, 1, ctx, -1, out, lps, &n_out, &e);
        if (rc != RUNC_OK || n_out != ctx - 1) fail("generate", &e);
        for (i = 0; i < n_out; i++)
            if (out[i] < 0 || out[i] >= c->vocab_size) fail("generated id out of range", &e);
    }
    (void)checked;
    solve_with_tokenizer(st, c->vocab_size, data, size);
    runc_sampler_close(smp);
    runc_state_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    uint8_t *shifted = NULL;
    runc_model *m = (runc_model *)&m;
    runc_config cfg;
    runc_error e, eh;
    int rc, rh;

    if (size & 1) { /* odd sizes: a buffer at an odd address */
        shifted = (uint8_t *)malloc(size + 1);
        if (!shifted) return 0;
        memcpy(shifted + 1, data, size);
        p = shifted + 1;
    }
    memset(&e, 0x55, sizeof e); /* no stale NUL to hide a missing terminator */
    rc = runc_model_open_buffer(&m, p, size, 0, &e);
    check_status(rc, &e);
    if ((rc == RUNC_OK) != (m != NULL)) fail("model pointer set on failure or NULL on success", &e);

    /* the header check alone agrees with the open, unless the tensors were the problem */
    rh = runc_parse_header(p, size, &cfg, &eh);
    check_status(rh, &eh);
    if (rc == RUNC_OK || rc == RUNC_E_WEIGHT) {
        if (rh != RUNC_OK) fail("parse_header rejects what open accepted", &eh);
        if (cfg.file_bytes != size) fail("accepted file whose size differs from the header's", &eh);
    } else if (rh != rc) {
        fail("parse_header and open_buffer disagree", &e);
    }

    if (rc == RUNC_OK) {
        const runc_config *mc = runc_model_config(m);
        if (mc->dim != cfg.dim || mc->vocab_size != cfg.vocab_size || mc->version != cfg.version ||
            mc->file_bytes != cfg.file_bytes || mc->group_size != cfg.group_size ||
            mc->shared_classifier != cfg.shared_classifier)
            fail("config differs from parse_header's", &e);
        run_model(m, data, size, 1);
        runc_model_close(m);
    } else if (rc == RUNC_E_WEIGHT) {
        /* non-finite weights, unchecked: must still run without a crash */
        runc_model *u = NULL;
        rc = runc_model_open_buffer(&u, p, size, RUNC_OPEN_NO_WEIGHT_CHECK | RUNC_OPEN_COPY, &e);
        if (rc != RUNC_OK) fail("unchecked open of a file that failed only its weight check", &e);
        run_model(u, data, size, 0);
        runc_model_close(u);
    }
    free(shifted);
    return 0;
}
