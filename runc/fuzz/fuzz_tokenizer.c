/*
 * fuzz_tokenizer.c - libFuzzer harness for the tokenizer loader
 * (runc_tokenizer_open_buffer), then every piece through encode and decode.
 *
 *   make fuzz-tokenizer FUZZ_SECONDS=60   (runc/fuzz/fuzz.mk; seeds are real tokenizer.bin files)
 *
 * The input is a tokenizer.bin. The vocabulary size (which in use comes from
 * the model) is the number of entries the bytes hold, so that whole files
 * load and the deep code runs; one input in four is opened with one token
 * more or fewer (a tokenizer of another model), and unparseable ones with a
 * size taken from the first byte.
 *
 * Checked beyond "no crash": a tokenizer pointer exactly on success, a
 * one-line NUL-terminated message, and on success: every piece is what the
 * file says, and encoding a piece's text then decoding it gives the text back
 * when the vocabulary has byte fallback (else the encoder may refuse a
 * character, with RUNC_E_ENCODE and nothing else).
 */
#define TEST_PROGRAM "fuzz_tokenizer"
#define TEST_UTIL_FUZZ
#include "test_util.h" /* fail, check_message, count_entries, has_byte_fallback, has_space_piece */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_TRIP_MAX 64 /* pieces longer than this are not round-tripped (speed) */

/* Encode text (bos on), decode it back after BOS; with byte fallback the
 * round trip must be exact unless the text spells a byte piece "<0x..>". */
static void round_trip(const runc_tokenizer *t, const char *text, int fallback, int has_space, int *ids, int cap,
                       char *out, size_t out_cap)
{
    runc_error e;
    int n = -1, rc, i, V = runc_tokenizer_vocab_size(t);
    size_t len;
    rc = runc_encode(t, text, 1, 1, ids, cap, &n, &e);
    check_message(rc, &e);
    if (rc == RUNC_E_ENCODE || rc == RUNC_E_VOCAB) {
        if (rc == RUNC_E_ENCODE && fallback && V > 3) fail("byte-fallback vocabulary refused a text", &e);
        return;
    }
    if (rc != RUNC_OK) fail("encode failed with a large enough buffer", &e);
    if (n < 2 || ids[0] != RUNC_TOKEN_BOS || ids[n - 1] != RUNC_TOKEN_EOS) fail("BOS/EOS not in place", &e);
    for (i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) fail("encoded id out of range", &e);
    rc = runc_decode(t, ids[0], ids + 1, n - 2, out, out_cap, &len, &e);
    check_message(rc, &e);
    if (rc != RUNC_OK) fail("decode of encoded ids failed", &e);
    if (len != strlen(out)) {
        /* a piece holding a NUL byte: decode is byte-exact, strlen stops early */
        if (!memchr(out, '\0', len)) fail("decode length disagrees with its text", &e);
        return;
    }
    /* BOS and EOS pieces may be plain text in a fuzzed vocabulary ("<s>" is
     * not special to the encoder), and "<0xAB>" text may merge into a byte
     * piece: the round trip is exact only without those */
    /* without a " " piece the dummy prefix is the byte piece <0x20>, which
     * decodes to a space that (as in llama2.c) is not dropped after BOS */
    if (!has_space && out[0] == ' ') out++;
    if (fallback && !strstr(text, "<0x") && !strstr(text, "<0X") && strcmp(out, text) != 0) {
        int special = 0;
        for (i = 1; i < n - 1; i++) special |= ids[i] == RUNC_TOKEN_BOS || ids[i] == RUNC_TOKEN_EOS;
        if (!special) {
            fprintf(stderr, "text '%s' decoded as '%s'\n", text, out);
            fail("byte-fallback round trip changed the text", &e);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    runc_tokenizer *t = (runc_tokenizer *)&t;
    runc_error e;
    int vocab = count_entries(data, size), rc;

    if (vocab < 0) vocab = size > 0 ? 1 + data[0] : 1;
    else if (size > 5 && data[size - 1] % 4 == 0) vocab += (data[size - 2] & 1) ? 1 : -1;
    if (vocab <= 0) vocab = 1;

    memset(&e, 0x55, sizeof e);
    rc = runc_tokenizer_open_buffer(&t, data, size, vocab, &e);
    check_message(rc, &e);
    if ((rc == RUNC_OK) != (t != NULL)) fail("tokenizer pointer set on failure or NULL on success", &e);
    if (rc != RUNC_OK) return 0;

    if (runc_tokenizer_vocab_size(t) != vocab) fail("vocab size", &e);
    {
        int max_len = runc_tokenizer_max_token_length(t), i, fallback = has_byte_fallback(t);
        int has_space = has_space_piece(t);
        size_t longest = 0;
        /* texts are one or two pieces of at most ROUND_TRIP_MAX bytes; buffers sized by the
         * documented rules (ids: strlen + 3; decode: ids x max_token_length + 1) */
        int cap = 2 * ROUND_TRIP_MAX + 3;
        int *ids = (int *)malloc((size_t)cap * sizeof *ids);
        char *text = (char *)malloc(2 * ROUND_TRIP_MAX + 1);
        char *out = (char *)malloc((size_t)cap * (size_t)max_len + 1);
        if (!ids || !text || !out) abort();
        for (i = 0; i < vocab; i++) {
            size_t len, dlen;
            const char *piece = runc_token_piece(t, i, &len), *dp;
            if (!piece || len == 0 || len > (size_t)max_len) fail("piece of a loaded token", &e);
            longest = len > longest ? len : longest;
            if (runc_decode_piece(t, 5, i, &dp, &dlen) != RUNC_OK || (dlen > 0 && !dp)) fail("decode_piece", &e);
            if (runc_token_score(t, i) != runc_token_score(t, i)) fail("NaN score loaded", &e);
            /* the piece as text (up to a NUL byte), and the piece twice;
             * long pieces and large vocabularies only in part (speed) */
            if (len > ROUND_TRIP_MAX || (i > 1024 && i % 16 != 0)) continue;
            memcpy(text, piece, len);
            text[len] = '\0';
            round_trip(t, text, fallback, has_space, ids, cap, out, (size_t)cap * (size_t)max_len + 1);
            if (i % 7 == 0) {
                size_t at = strlen(text); /* < len when the piece holds a NUL byte */
                memcpy(text + at, piece, len);
                text[at + len] = '\0';
                round_trip(t, text, fallback, has_space, ids, cap, out, (size_t)cap * (size_t)max_len + 1);
            }
        }
        if (longest != (size_t)max_len) fail("max_token_length is not the longest piece", &e);
        if (runc_token_piece(t, vocab, NULL) != NULL || runc_token_piece(t, -1, NULL) != NULL)
            fail("piece out of range", &e);
        free(ids);
        free(text);
        free(out);
    }
    runc_tokenizer_close(t);
    return 0;
}
