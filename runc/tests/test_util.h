/*
 * test_util.h - helpers shared by runc's C test programs and fuzz harnesses
 * (test_runc.c, test_batch.c, tsan_batch.c, fuzz_model.c, fuzz_tokenizer.c,
 * fuzz_encode.c). Not part of the library: runc.c, batch.c and the runner
 * never include it.
 *
 * Header-only, every function static inline: each program compiles its own
 * copy (no extra object file in any build rule), and a program that uses only
 * some of the helpers gets no unused-function warnings for the others.
 *
 * Before including it, define
 *   TEST_PROGRAM    the program's name, a string literal ("test_batch"): it
 *                   starts the messages of fail() and of out-of-memory exits;
 *   TEST_UTIL_FUZZ  in the libFuzzer harnesses only: the helpers abort()
 *                   where the tests exit(2) (libFuzzer reports an abort as a
 *                   crash, with the input that caused it), fail() and
 *                   check_message() are defined and CHECK is not;
 * and any feature-test macro the program needs (_POSIX_C_SOURCE), since this
 * header includes system headers.
 */
#ifndef RUNC_TEST_UTIL_H
#define RUNC_TEST_UTIL_H

#ifndef TEST_PROGRAM
#error "define TEST_PROGRAM (the program's name, a string literal) before including test_util.h"
#endif

#include "runc.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a helper does when memory runs out: exit status 2 (neither pass nor
 * fail) in the tests, a crash the fuzzer records in the harnesses. */
#ifdef TEST_UTIL_FUZZ
#define TEST_DIE() abort()
#else
#define TEST_DIE() exit(2)
#endif

/* ---- CHECK: count a check, print one line when it fails (tests only) -------- */

#ifndef TEST_UTIL_FUZZ
/* The program's counters: the tests print them at the end and exit non-zero
 * when n_fail is not 0. CHECK is not thread-safe: call it from one thread. */
static int n_pass, n_fail;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) {                                       \
            n_pass++;                                     \
        } else {                                          \
            n_fail++;                                     \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
        }                                                 \
    } while (0)
#endif

/* ---- growing byte buffers: model and tokenizer files built in memory -------- */

typedef struct {
    unsigned char *p;
    size_t n, cap; /* bytes written, bytes allocated */
} buf;

static inline void put(buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = (unsigned char *)realloc(b->p, cap);
        if (!b->p) {
            fprintf(stderr, TEST_PROGRAM ": out of memory\n");
            TEST_DIE();
        }
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n); /* data may be NULL when n is 0 */
    b->n += n;
}

/* Values go in the host's byte order: the formats' little-endian one, except
 * on a big-endian host, where test_runc only checks that the files are refused. */
static inline void put_i32(buf *b, int32_t v) { put(b, &v, 4); }
static inline void put_f32(buf *b, float v) { put(b, &v, 4); }
static inline void put_floats(buf *b, const float *v, size_t n) { put(b, v, n * sizeof(float)); }

/* zero bytes up to offset n (nothing when the buffer is already that long) */
static inline void pad_to(buf *b, size_t n)
{
    static const unsigned char zeros[256];
    while (b->n < n) put(b, zeros, n - b->n > sizeof zeros ? sizeof zeros : n - b->n);
}

/* One tokenizer.bin entry: score (f32), length (i32), the piece's bytes. */
static inline void put_piece(buf *b, const char *piece, float score)
{
    size_t len = strlen(piece);
    put_f32(b, score);
    put_i32(b, (int32_t)len);
    put(b, piece, len);
}

/* The 256-byte header of a v1 (fp32) or v2 (Q8_0) model file: magic, version,
 * the seven config fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len), the shared-classifier byte and, for v2, the group
 * size; zero-padded up to offset pad (the caller pads the rest when it writes
 * an extension at offset 240 first). */
static inline void put_model_header(buf *b, int version, const int32_t cfg[7], int shared, int group, size_t pad)
{
    const uint32_t magic = 0x616b3432u; /* "ak42" */
    const unsigned char flag = (unsigned char)shared;
    int k;
    put(b, &magic, 4);
    put_i32(b, version);
    for (k = 0; k < 7; k++) put_i32(b, cfg[k]);
    put(b, &flag, 1);
    if (version == 2) put_i32(b, group);
    pad_to(b, pad);
}

/* Q8_0 as llama2.c's export.py: per group of gs, scale = max|w| / 127 and
 * q = round(w / scale). Writes the n int8 values, then the n / gs scales, and
 * replaces w by its dequantized values (what a reference computation must
 * use to match the file). */
static inline void put_q8(buf *b, float *w, size_t n, int gs)
{
    size_t g, i, groups = n / (size_t)gs;
    int8_t *q = (int8_t *)malloc(n);
    float *s = (float *)malloc(groups * sizeof(float));
    if (!q || !s) TEST_DIE();
    for (g = 0; g < groups; g++) {
        float mx = 0.0f;
        for (i = 0; i < (size_t)gs; i++) mx = fmaxf(mx, fabsf(w[g * gs + i]));
        s[g] = mx / 127.0f;
        for (i = 0; i < (size_t)gs; i++) {
            q[g * gs + i] = (int8_t)(s[g] > 0 ? roundf(w[g * gs + i] / s[g]) : 0.0f);
            w[g * gs + i] = (float)q[g * gs + i] * s[g];
        }
    }
    put(b, q, n);
    put_floats(b, s, groups);
    free(q);
    free(s);
}

/* n values a * rnd(), written as fp32 (version 1) or Q8_0 in groups of gs
 * (version 2). rnd is the program's own generator, so that each program keeps
 * its random stream. */
static inline void put_rand_matrix(buf *b, size_t n, float a, int version, int gs, float (*rnd)(void))
{
    size_t i;
    float *w = (float *)malloc(n * sizeof *w);
    if (!w) TEST_DIE();
    for (i = 0; i < n; i++) w[i] = a * rnd();
    if (version == 2) put_q8(b, w, n, gs);
    else put_floats(b, w, n);
    free(w);
}

/* ---- random numbers and files ----------------------------------------------- */

/* One step of xorshift64* on *state (never 0); the callers take the top bits
 * they need from the result. */
static inline unsigned long long xorshift64s(unsigned long long *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1Dull;
}

/* The whole file at path in a fresh malloc'd block (one byte longer than the
 * file, so that an empty file is no malloc(0)), its size in *n; NULL when it
 * cannot be opened, sized or read. */
static inline unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p = NULL;
    long len = -1;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(p = (unsigned char *)malloc((size_t)len + 1)) || fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* ---- fuzz harnesses: the API's contract, tokenizer files ------------------- */

#ifdef TEST_UTIL_FUZZ
/* A breach of the API's documented contract: say which, and crash. */
static inline void fail(const char *what, const runc_error *e)
{
    fprintf(stderr, TEST_PROGRAM ": contract broken: %s (%s: %s)\n", what, runc_status_name(e->code), e->message);
    abort();
}

/* The error a call filled: NUL-terminated, one line, its code the returned
 * status, and a message whenever the call failed. */
static inline void check_message(int rc, const runc_error *e)
{
    size_t n = 0;
    while (n < sizeof e->message && e->message[n]) n++; /* strnlen is POSIX, not C99 */
    if (n == sizeof e->message) fail("message not NUL-terminated", e);
    if (e->code != rc) fail("err->code differs from the returned status", e);
    if (rc != RUNC_OK && n == 0) fail("failure without a message", e);
    if (memchr(e->message, '\n', n)) fail("message spans lines", e);
}

/* Entries a tokenizer.bin's bytes hold, walking them as a reader would; -1
 * when they do not parse (or hold more than 2^20 entries). */
static inline int count_entries(const uint8_t *p, size_t size)
{
    size_t off = 4;
    int n = 0;
    if (size < 4) return -1;
    while (off < size) {
        int32_t len;
        if (size - off < 8) return -1;
        memcpy(&len, p + off + 4, 4);
        off += 8;
        if (len < 0 || (size_t)len > size - off) return -1;
        off += (size_t)len;
        if (++n > 1 << 20) return -1;
    }
    return n;
}

/* Whether t has SentencePiece's byte fallback: the 256 pieces "<0x00>" ..
 * "<0xFF>" at ids 3..258. */
static inline int has_byte_fallback(const runc_tokenizer *t)
{
    int b;
    if (runc_tokenizer_vocab_size(t) < 259) return 0;
    for (b = 0; b < 256; b++) {
        char want[8];
        size_t len;
        const char *piece = runc_token_piece(t, b + 3, &len);
        snprintf(want, sizeof want, "<0x%02X>", b);
        if (len != 6 || memcmp(piece, want, 6) != 0) return 0;
    }
    return 1;
}

/* Whether t has a " " piece; without one the encoder's dummy prefix is the
 * byte piece <0x20>, which decode does not drop after BOS. */
static inline int has_space_piece(const runc_tokenizer *t)
{
    int i, V = runc_tokenizer_vocab_size(t);
    for (i = 0; i < V; i++) {
        size_t len;
        const char *piece = runc_token_piece(t, i, &len);
        if (len == 1 && piece[0] == ' ') return 1;
    }
    return 0;
}
#endif /* TEST_UTIL_FUZZ */

#endif /* RUNC_TEST_UTIL_H */
