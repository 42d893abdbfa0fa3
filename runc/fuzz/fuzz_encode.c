/*
 * fuzz_encode.c - libFuzzer harness for the encoder and decoder: arbitrary
 * bytes (UTF-8 or not) through runc_encode and back through runc_decode.
 *
 *   make fuzz-encode FUZZ_SECONDS=60      (runc/fuzz/fuzz.mk)
 *
 * Input: one control byte, then
 *   bit 0 clear: the text, encoded with one of the fixed tokenizers: two
 *     built in (a digits vocabulary without byte fallback, and one with the
 *     256 byte pieces and multi-character merges) and every tokenizer.bin
 *     named in $RUNC_FUZZ_TOKENIZERS (colon-separated; runc/fuzz/fuzz.mk points it
 *     at the seed script's real SentencePiece exports);
 *   bit 0 set: a 2-byte little-endian length, a tokenizer.bin of that many
 *     bytes, then the text (the fuzzer mutates the vocabulary too).
 *   bit 1: add BOS; bit 2: add EOS; bits 3-7: which fixed tokenizer, and the
 *     token buffer's capacity in the small-buffer check.
 * The text stops at its first NUL byte (the API takes C strings).
 *
 * Checked: cap = strlen(text) + 3 always suffices (runc.h); a smaller buffer
 * gives RUNC_E_BUFFER and never a write past it (ASan); ids are in range;
 * decode with n * max_token_length + 1 bytes always succeeds, a smaller
 * buffer reports the needed length; with byte fallback every text encodes and
 * decodes back to itself (unless it spells a "<0x..>" piece or a control
 * piece); messages are one NUL-terminated line.
 */
#define TEST_PROGRAM "fuzz_encode"
#define TEST_UTIL_FUZZ
#include "test_util.h" /* fail, check_message, count_entries, has_*, buf, put_*, read_file */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENIZERS 16

typedef struct {
    runc_tokenizer *tok;
    int fallback;  /* the 256 byte pieces at ids 3..258 */
    int has_space; /* a " " piece (else the dummy prefix is <0x20>, not dropped by decode) */
} fixed_tok;

static fixed_tok fixed[MAX_TOKENIZERS];
static int n_fixed;

/* ---- built-in tokenizers ---------------------------------------------------- */

static void add_fixed(const unsigned char *data, size_t size, int vocab)
{
    runc_error e;
    runc_tokenizer *t = NULL;
    if (n_fixed == MAX_TOKENIZERS) return;
    if (runc_tokenizer_open_buffer(&t, data, size, vocab, &e) != RUNC_OK) {
        fprintf(stderr, "fuzz_encode: a fixed tokenizer does not load: %s\n", e.message);
        abort();
    }
    fixed[n_fixed].tok = t;
    fixed[n_fixed].fallback = has_byte_fallback(t);
    fixed[n_fixed].has_space = has_space_piece(t);
    n_fixed++;
}

static void builtin(int with_bytes)
{
    static const char *const chars[] = {" ", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-",
                                        "*", "/", "=", ".", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    static const char *const merges[] = {" =", "00", ".0", ".00", "000", " 1", "12", "123", "  ", "    ",
                                         "\xc3\xa9\xc3\xa9", "= ", " = "};
    buf b = {NULL, 0, 0};
    int i;
    put_i32(&b, 8); /* max_token_length */
    put_piece(&b, "<unk>", 0.0f);
    put_piece(&b, "\n<s>\n", 0.0f);
    put_piece(&b, "\n</s>\n", 0.0f);
    if (with_bytes)
        for (i = 0; i < 256; i++) {
            char piece[8];
            snprintf(piece, sizeof piece, "<0x%02X>", i);
            put_piece(&b, piece, 0.0f);
        }
    for (i = 0; i < (int)(sizeof chars / sizeof chars[0]); i++) put_piece(&b, chars[i], -1.0f);
    for (i = 0; i < (int)(sizeof merges / sizeof merges[0]); i++) put_piece(&b, merges[i], (float)(-2 - i % 5));
    add_fixed(b.p, b.n, count_entries(b.p, b.n)); /* the vocabulary: every entry written */
    free(b.p);
}

static void load_files(void)
{
    const char *list = getenv("RUNC_FUZZ_TOKENIZERS");
    char path[4096];
    while (list && *list) {
        const char *end = strchr(list, ':');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        if (n > 0 && n < sizeof path) {
            unsigned char *data;
            size_t size = 0;
            memcpy(path, list, n);
            path[n] = '\0';
            data = read_file(path, &size);
            if (!data || size == 0) {
                fprintf(stderr, "fuzz_encode: cannot read %s (from RUNC_FUZZ_TOKENIZERS)\n", path);
                abort();
            }
            add_fixed(data, size, count_entries(data, size));
            free(data);
        }
        list = end ? end + 1 : NULL;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    builtin(0);
    builtin(1);
    load_files();
    return 0;
}

/* ---- one input ----------------------------------------------------------------- */

static void exercise(const runc_tokenizer *t, int fallback, int has_space, const char *text, int bos, int eos,
                     unsigned small)
{
    runc_error e;
    size_t n_text = strlen(text), len = 0, cap_out;
    int cap = (int)n_text + 3, n = -1, rc, i, V = runc_tokenizer_vocab_size(t);
    int max_len = runc_tokenizer_max_token_length(t);
    int *ids = (int *)malloc((size_t)cap * sizeof *ids);
    char *out;
    if (!ids) abort();

    memset(&e, 0x55, sizeof e);
    rc = runc_encode(t, text, bos, eos, ids, cap, &n, &e);
    check_message(rc, &e);
    if (rc == RUNC_E_BUFFER) fail("strlen + 3 ids were not enough", &e);
    if (rc == RUNC_E_ENCODE && fallback) fail("a byte-fallback vocabulary refused a text", &e);
    if (rc != RUNC_OK) {
        if (rc != RUNC_E_ENCODE && rc != RUNC_E_VOCAB) fail("unexpected encode status", &e);
        if (n != 0) fail("n_tokens set on failure", &e);
        free(ids);
        return;
    }
    if (n < 0 || n > cap) fail("token count out of range", &e);
    for (i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) fail("id out of range", &e);
    if (bos && ids[0] != RUNC_TOKEN_BOS) fail("BOS missing", &e);
    if (eos && ids[n - 1] != RUNC_TOKEN_EOS) fail("EOS missing", &e);

    /* a smaller token buffer: OK with the same ids, or RUNC_E_BUFFER; never a write past it */
    {
        int scap = (int)(small % (unsigned)(n + 1)), sn = -1;
        int *sids = (int *)malloc((size_t)(scap ? scap : 1) * sizeof *sids);
        if (!sids) abort();
        rc = runc_encode(t, text, bos, eos, scap ? sids : NULL, scap, &sn, &e);
        check_message(rc, &e);
        if (rc != RUNC_E_BUFFER && !(rc == RUNC_OK && sn == n && memcmp(sids, ids, (size_t)n * sizeof *ids) == 0))
            fail("encode into a small buffer", &e);
        free(sids);
    }

    /* decode (after BOS when there is one) with the documented capacity */
    {
        int first = bos ? 1 : 0, count = n - first - (eos ? 1 : 0), prev = bos ? RUNC_TOKEN_BOS : -1;
        cap_out = (size_t)(count > 0 ? count : 0) * (size_t)max_len + 1;
        out = (char *)malloc(cap_out);
        if (!out) abort();
        rc = runc_decode(t, prev, ids + first, count, out, cap_out, &len, &e);
        check_message(rc, &e);
        if (rc != RUNC_OK || len + 1 > cap_out || out[len] != '\0') fail("decode with n * max_len + 1 bytes", &e);
        if (len > 0) { /* one byte short: RUNC_E_BUFFER and the needed length */
            size_t need = len;
            rc = runc_decode(t, prev, ids + first, count, out, need, &len, &e);
            check_message(rc, &e);
            if (rc != RUNC_E_BUFFER || len != need) fail("decode into a buffer one byte short", &e);
            rc = runc_decode(t, prev, ids + first, count, out, cap_out, &len, &e);
        }
        if (fallback && bos && !strstr(text, "<0x") && !strstr(text, "<0X")) {
            const char *got = out;
            int special = 0;
            for (i = first; i < first + count; i++) special |= ids[i] == RUNC_TOKEN_BOS || ids[i] == RUNC_TOKEN_EOS;
            if (!has_space && got[0] == ' ') got++;
            if (!special && (strlen(got) != n_text || memcmp(got, text, n_text) != 0)) {
                fprintf(stderr, "text '%s' decoded as '%s'\n", text, got);
                fail("byte-fallback round trip changed the text", &e);
            }
        }
        free(out);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned ctl;
    char *text;
    const uint8_t *rest;
    size_t n_rest;
    if (size < 1) return 0;
    ctl = data[0];
    rest = data + 1;
    n_rest = size - 1;
    if (ctl & 1) {
        size_t tlen;
        int vocab;
        runc_tokenizer *t = NULL;
        runc_error e;
        int fb, sp;
        if (n_rest < 2) return 0;
        tlen = (size_t)rest[0] | (size_t)rest[1] << 8;
        rest += 2;
        n_rest -= 2;
        if (tlen > n_rest) tlen = n_rest;
        vocab = count_entries(rest, tlen);
        if (vocab <= 0 || runc_tokenizer_open_buffer(&t, rest, tlen, vocab, &e) != RUNC_OK) return 0;
        fb = has_byte_fallback(t);
        sp = has_space_piece(t);
        text = (char *)malloc(n_rest - tlen + 1);
        if (!text) abort();
        memcpy(text, rest + tlen, n_rest - tlen);
        text[n_rest - tlen] = '\0';
        exercise(t, fb, sp, text, (ctl >> 1) & 1, (ctl >> 2) & 1, ctl >> 3);
        runc_tokenizer_close(t);
    } else {
        const fixed_tok *f = &fixed[(ctl >> 3) % (unsigned)n_fixed];
        text = (char *)malloc(n_rest + 1);
        if (!text) abort();
        memcpy(text, rest, n_rest);
        text[n_rest] = '\0';
        exercise(f->tok, f->fallback, f->has_space, text, (ctl >> 1) & 1, (ctl >> 2) & 1, ctl >> 3);
    }
    free(text);
    return 0;
}
