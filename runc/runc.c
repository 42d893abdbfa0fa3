/*
 * runc.c - TinyMath's C99 inference library (see runc.h for the API).
 *
 * Sections, in llama2.c's order:
 *   1. utilities: errors, checked size arithmetic, little-endian reads
 *   2. config and weights: header validation, tensor layout, open/close
 *   3. tokenizer: tokenizer.bin, encode, decode
 *   4. forward: RMSNorm, matmul (fp32 and Q8_0), RoPE, attention, SwiGLU
 *   5. sampler: greedy, temperature, top-p, log-probabilities
 *   6. generation and the TinyMath problem convention
 *
 * No global state, no printing, no exit(): every failure is a status code plus
 * a message in the caller's runc_error.
 */

/* mmap and friends are POSIX, outside C99: ask for them before any include. */
#if !defined(RUNC_NO_MMAP) && (defined(__unix__) || defined(__APPLE__))
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define RUNC_HAVE_MMAP 1
#else
#define RUNC_HAVE_MMAP 0
#endif

#include "runc_impl.h"

/* The same answers on every machine: no fused multiply-add (a*b+c rounded
 * once) where C says two roundings. GCC contracts only in its GNU modes (the
 * builds here are -std=c99); clang contracts by default, e.g. on ARM, unless
 * told. x86-64 without -mfma has no FMA, so contraction would make ARM differ. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if RUNC_HAVE_MMAP
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

/* ========================================================================== */
/* 1. utilities                                                                */
/* ========================================================================== */

#define RUNC_MAGIC 0x616b3432u       /* "ak42" read as a little-endian uint32 */
#define RUNC_V0_HEADER 28u
#define RUNC_V12_HEADER 256u
#define RUNC_EXT_OFFSET 240u
/* A v0 file starts with dim, so its first int32 is small; anything beyond this
 * is treated as a bad magic rather than as an absurd legacy dim. */
#define RUNC_V0_FIRST_FIELD_RANGE 1048576
#define RUNC_OPEN_FLAGS (RUNC_OPEN_COPY | RUNC_OPEN_NO_MMAP | RUNC_OPEN_NO_WEIGHT_CHECK)

/* Every byte count is computed in size_t with overflow checks against this
 * limit: the address space on 32-bit hosts, 256 TiB on 64-bit ones (no file
 * of a sane model comes near it, and products of absurd header fields do). */
#if SIZE_MAX > 0xFFFFFFFFu
#define RUNC_SIZE_LIMIT ((size_t)1 << 48)
#else
#define RUNC_SIZE_LIMIT SIZE_MAX
#endif

int runc_set_error(runc_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

int runc_set_ok(runc_error *err)
{
    if (err) {
        err->code = RUNC_OK;
        err->message[0] = '\0';
    }
    return RUNC_OK;
}

/* Prefix an error message with a file path, for errors of runc_*_open(path). */
static int prefix_path(runc_error *err, int code, const char *path)
{
    if (err && code != RUNC_OK) {
        char old[sizeof err->message];
        size_t n = strlen(path), room = sizeof err->message - 1, used;
        memcpy(old, err->message, sizeof old);
        if (n > 96) n = 96; /* keep most of the room for the message itself */
        memcpy(err->message, path, n);
        used = n;
        if (used + 2 <= room) {
            memcpy(err->message + used, ": ", 2);
            used += 2;
        }
        n = strlen(old);
        if (n > room - used) n = room - used;
        memcpy(err->message + used, old, n);
        err->message[used + n] = '\0';
    }
    return code;
}

const char *runc_status_name(int code)
{
    static const char *const names[] = {
        "RUNC_OK", "RUNC_E_ARG", "RUNC_E_NOMEM", "RUNC_E_IO", "RUNC_E_EMPTY",
        "RUNC_E_TRUNCATED", "RUNC_E_TRAILING", "RUNC_E_MAGIC", "RUNC_E_VERSION",
        "RUNC_E_FIELD", "RUNC_E_SHAPE", "RUNC_E_GROUP", "RUNC_E_FLAG", "RUNC_E_EXTENSION",
        "RUNC_E_OVERFLOW", "RUNC_E_TOKENIZER", "RUNC_E_VOCAB", "RUNC_E_ENCODE",
        "RUNC_E_CONTEXT", "RUNC_E_BUFFER", "RUNC_E_UNSUPPORTED", "RUNC_E_WEIGHT",
        "RUNC_E_NONFINITE"};
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0])) return "RUNC_E_UNKNOWN";
    return names[code];
}

/* Checked size arithmetic: 0 on overflow past RUNC_SIZE_LIMIT. */
static int mul_sz(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > RUNC_SIZE_LIMIT / a) return 0;
    *out = a * b;
    return 1;
}

static int add_sz(size_t a, size_t b, size_t *out)
{
    if (a > RUNC_SIZE_LIMIT || b > RUNC_SIZE_LIMIT - a) return 0;
    *out = a + b;
    return 1;
}

static int host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* All header reads go through memcpy: fields may sit at unaligned offsets
 * (v2's group size is at byte 37) and the buffer may be any char array. */
static int32_t rd_i32(const unsigned char *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t rd_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static float rd_f32(const unsigned char *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ========================================================================== */
/* 2. config and weights                                                       */
/* ========================================================================== */

/* runc_mat and struct runc_model are in runc_impl.h (batch.c reads the weights too). */

static const char *const field_names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                           "n_kv_heads", "vocab_size", "max_seq_len"};
static const int field_caps[7] = {RUNC_MAX_DIM, RUNC_MAX_HIDDEN_DIM, RUNC_MAX_LAYERS, RUNC_MAX_HEADS,
                                  RUNC_MAX_HEADS, RUNC_MAX_VOCAB, RUNC_MAX_SEQ_LEN};

/* The exact file length implied by a validated config. */
static int expected_file_bytes(runc_config *c, runc_error *err)
{
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t KV = (size_t)c->kv_dim, V = (size_t)c->vocab_size, S = (size_t)c->max_seq_len;
    size_t norms = 0, per_layer = 0, t1 = 0, t2 = 0, t3 = 0, mats = 0, total = 0, bytes = 0;
    int ok = 1;

    /* fp32 norm weights: rms_att and rms_ffn per layer, one final */
    ok = ok && mul_sz(2 * L, D, &norms) && add_sz(norms, D, &norms);
    /* matrix elements per layer: wq, wo (D x D); wk, wv (KV x D); w1, w2, w3 (H x D) */
    ok = ok && mul_sz(D, D, &t1) && mul_sz(t1, 2, &t1);
    ok = ok && mul_sz(KV, D, &t2) && mul_sz(t2, 2, &t2);
    ok = ok && mul_sz(H, D, &t3) && mul_sz(t3, 3, &t3);
    ok = ok && add_sz(t1, t2, &per_layer) && add_sz(per_layer, t3, &per_layer);
    ok = ok && mul_sz(per_layer, L, &mats);
    /* token embedding, and the classifier when not shared */
    ok = ok && mul_sz(V, D, &t1) && add_sz(mats, t1, &mats);
    if (!c->shared_classifier) ok = ok && add_sz(mats, t1, &mats);

    if (c->version == 2) {
        /* int8 values plus one fp32 scale per group; every matrix's size is a
         * multiple of the group size, so the groups can be counted in one go */
        size_t scales = 0;
        ok = ok && mul_sz(mats / (size_t)c->group_size, 4, &scales);
        ok = ok && add_sz(mats, scales, &bytes);
    } else {
        ok = ok && mul_sz(mats, 4, &bytes);
    }
    ok = ok && mul_sz(norms, 4, &norms) && add_sz(bytes, norms, &bytes);
    if (c->version == 0) {
        /* the legacy file also stores RoPE tables (cos and sin), which runc
         * recomputes: max_seq_len * head_size/2 floats each */
        ok = ok && mul_sz(S, (size_t)c->head_size, &t1) && mul_sz(t1, 4, &t1);
        ok = ok && add_sz(bytes, t1, &bytes);
    }
    ok = ok && add_sz(bytes, c->header_bytes, &total);
    if (!ok)
        return runc_set_error(err, RUNC_E_OVERFLOW,
                         "tensor sizes overflow: dim %d, hidden_dim %d, n_layers %d, vocab_size %d "
                         "imply a model beyond %llu bytes",
                         c->dim, c->hidden_dim, c->n_layers, c->vocab_size,
                         (unsigned long long)RUNC_SIZE_LIMIT);
    c->file_bytes = total;
    return RUNC_OK;
}

int runc_parse_header(const void *data, size_t size, runc_config *cfg, runc_error *err)
{
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *fields;
    runc_config c;
    int32_t v[7];
    int i;

    if (!cfg || (!data && size > 0)) return runc_set_error(err, RUNC_E_ARG, "runc_parse_header: NULL argument");
    if (!host_is_little_endian())
        return runc_set_error(err, RUNC_E_UNSUPPORTED, "model files are little-endian; this host is not");
    memset(&c, 0, sizeof c);
    if (size == 0) return runc_set_error(err, RUNC_E_EMPTY, "model file is empty");
    if (size < 4)
        return runc_set_error(err, RUNC_E_TRUNCATED, "model file is %zu bytes, too short for any header", size);

    if (rd_u32(p) == RUNC_MAGIC) {
        if (size < 8)
            return runc_set_error(err, RUNC_E_TRUNCATED, "model header truncated after the magic (%zu bytes)", size);
        c.version = rd_i32(p + 4);
        if (c.version != 1 && c.version != 2)
            return runc_set_error(err, RUNC_E_VERSION, "unsupported model version %d (runc reads 0, 1 and 2)",
                             c.version);
        if (size < RUNC_V12_HEADER)
            return runc_set_error(err, RUNC_E_TRUNCATED, "model header truncated: %zu of %u bytes", size,
                             RUNC_V12_HEADER);
        c.header_bytes = RUNC_V12_HEADER;
        fields = p + 8;
    } else {
        int32_t first = rd_i32(p);
        if (first < -RUNC_V0_FIRST_FIELD_RANGE || first > RUNC_V0_FIRST_FIELD_RANGE)
            return runc_set_error(err, RUNC_E_MAGIC,
                             "bad magic 0x%08lX: not a llama2.c model file (expected \"ak42\" or a "
                             "legacy v0 header)",
                             (unsigned long)rd_u32(p));
        if (size < RUNC_V0_HEADER)
            return runc_set_error(err, RUNC_E_TRUNCATED, "legacy (v0) model header truncated: %zu of %u bytes",
                             size, RUNC_V0_HEADER);
        c.version = 0;
        c.header_bytes = RUNC_V0_HEADER;
        fields = p;
    }

    for (i = 0; i < 7; i++) v[i] = rd_i32(fields + 4 * i);
    if (c.version == 0) {
        /* legacy: a negative vocab_size flags an untied classifier */
        c.shared_classifier = v[5] > 0;
        if (v[5] < 0 && v[5] != INT32_MIN) v[5] = -v[5];
    } else {
        unsigned flag = p[36];
        if (flag > 1)
            return runc_set_error(err, RUNC_E_FLAG, "shared_classifier flag is %u, must be 0 or 1", flag);
        c.shared_classifier = (int)flag;
    }
    for (i = 0; i < 7; i++) {
        if (v[i] <= 0)
            return runc_set_error(err, RUNC_E_FIELD, "header field %s = %ld must be positive", field_names[i],
                             (long)v[i]);
        if (v[i] > field_caps[i])
            return runc_set_error(err, RUNC_E_FIELD, "header field %s = %ld exceeds the limit %d", field_names[i],
                             (long)v[i], field_caps[i]);
    }
    c.dim = v[0];
    c.hidden_dim = v[1];
    c.n_layers = v[2];
    c.n_heads = v[3];
    c.n_kv_heads = v[4];
    c.vocab_size = v[5];
    c.max_seq_len = v[6];

    if (c.dim % c.n_heads != 0)
        return runc_set_error(err, RUNC_E_SHAPE, "n_heads = %d does not divide dim = %d", c.n_heads, c.dim);
    if (c.n_heads % c.n_kv_heads != 0)
        return runc_set_error(err, RUNC_E_SHAPE, "n_kv_heads = %d does not divide n_heads = %d", c.n_kv_heads,
                         c.n_heads);
    c.head_size = c.dim / c.n_heads;
    if (c.head_size % 2 != 0)
        return runc_set_error(err, RUNC_E_SHAPE, "head size dim/n_heads = %d is odd (RoPE rotates channel pairs)",
                         c.head_size);
    c.kv_dim = c.n_kv_heads * c.head_size;

    if (c.version == 2) {
        c.group_size = rd_i32(p + 37);
        if (c.group_size <= 0)
            return runc_set_error(err, RUNC_E_GROUP, "group_size = %d must be positive", c.group_size);
        /* activations are quantized in groups too, so the group size must
         * divide both matrix input widths: dim and hidden_dim */
        if (c.dim % c.group_size != 0)
            return runc_set_error(err, RUNC_E_GROUP, "group_size = %d does not divide dim = %d", c.group_size,
                             c.dim);
        if (c.hidden_dim % c.group_size != 0)
            return runc_set_error(err, RUNC_E_GROUP, "group_size = %d does not divide hidden_dim = %d",
                             c.group_size, c.hidden_dim);
    }

    /* llama2.c's hard-coded values, unless the TinyMath extension says otherwise */
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    if (c.version >= 1) {
        const unsigned char *ext = p + RUNC_EXT_OFFSET;
        if (memcmp(ext, "TMx1", 4) == 0) {
            float theta = rd_f32(ext + 4), eps = rd_f32(ext + 8);
            if (!(theta > 0.0f) || !isfinite(theta))
                return runc_set_error(err, RUNC_E_EXTENSION, "extension rope_theta = %g must be positive and finite",
                                 (double)theta);
            if (!(eps > 0.0f) || !isfinite(eps))
                return runc_set_error(err, RUNC_E_EXTENSION, "extension norm_eps = %g must be positive and finite",
                                 (double)eps);
            c.rope_theta = theta;
            c.norm_eps = eps;
            c.has_extension = 1;
        } else if (ext[0] | ext[1] | ext[2] | ext[3]) {
            return runc_set_error(err, RUNC_E_EXTENSION,
                             "unknown header extension at byte 240 (bytes %02X %02X %02X %02X; expected "
                             "\"TMx1\" or zeros)",
                             ext[0], ext[1], ext[2], ext[3]);
        }
    }

    {
        int rc = expected_file_bytes(&c, err);
        if (rc != RUNC_OK) return rc;
    }
    if (size < c.file_bytes)
        return runc_set_error(err, RUNC_E_TRUNCATED, "model file is truncated: %zu bytes, the header implies %zu",
                         size, c.file_bytes);
    if (size > c.file_bytes)
        return runc_set_error(err, RUNC_E_TRAILING,
                         "model file has %zu trailing bytes: %zu bytes, the header implies %zu",
                         size - c.file_bytes, size, c.file_bytes);
    *cfg = c;
    return runc_set_ok(err);
}

static int model_keep(runc_model *m, void *block)
{
    if (m->n_allocs == m->cap_allocs) {
        size_t cap = m->cap_allocs ? 2 * m->cap_allocs : 16;
        void **grown = (void **)realloc(m->allocs, cap * sizeof *grown);
        if (!grown) return 0;
        m->allocs = grown;
        m->cap_allocs = cap;
    }
    m->allocs[m->n_allocs++] = block;
    return 1;
}

/* fp32 data at byte offset `off`: used in place when aligned, else copied. */
static int take_f32(runc_model *m, size_t *off, size_t count, const float **out)
{
    const unsigned char *p = m->data + *off;
    if ((uintptr_t)p % sizeof(float) == 0) {
        *out = (const float *)(const void *)p;
    } else {
        float *copy = (float *)malloc(count ? count * sizeof(float) : 1);
        if (!copy || !model_keep(m, copy)) {
            free(copy);
            return RUNC_E_NOMEM;
        }
        memcpy(copy, p, count * sizeof(float));
        *out = copy;
    }
    *off += count * sizeof(float);
    return RUNC_OK;
}

/* n_mats matrices of `count` elements each, stored one after the other. */
static int take_mats(runc_model *m, size_t *off, runc_mat *mats, int n_mats, size_t count)
{
    int i, rc;
    for (i = 0; i < n_mats; i++) {
        if (m->cfg.version == 2) {
            mats[i].q = (const int8_t *)(m->data + *off);
            *off += count;
            rc = take_f32(m, off, count / (size_t)m->cfg.group_size, &mats[i].s);
        } else {
            rc = take_f32(m, off, count, &mats[i].f);
        }
        if (rc != RUNC_OK) return rc;
    }
    return RUNC_OK;
}

/* Point the weights into the (already validated) file bytes. */
static int model_map_weights(runc_model *m, runc_error *err)
{
    const runc_config *c = &m->cfg;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t KV = (size_t)c->kv_dim, V = (size_t)c->vocab_size;
    size_t off = c->header_bytes;
    int rc = RUNC_OK, i, half = c->head_size / 2;

    m->mats = (runc_mat *)calloc(7 * L, sizeof *m->mats);
    m->rope_freq = (float *)malloc((size_t)half * sizeof(float));
    if (!m->mats || !m->rope_freq) return runc_set_error(err, RUNC_E_NOMEM, "out of memory for the weight tables");
    m->wq = m->mats;
    m->wk = m->wq + L;
    m->wv = m->wk + L;
    m->wo = m->wv + L;
    m->w1 = m->wo + L;
    m->w2 = m->w1 + L;
    m->w3 = m->w2 + L;

#define TRY(expr)                 \
    do {                          \
        rc = (expr);              \
        if (rc != RUNC_OK) break; \
    } while (0)
    do {
        if (c->version == 0) {
            /* llama2.c legacy order */
            TRY(take_mats(m, &off, &m->tok, 1, V * D));
            TRY(take_f32(m, &off, L * D, &m->rms_att));
            TRY(take_mats(m, &off, m->wq, (int)L, D * D));
            TRY(take_mats(m, &off, m->wk, (int)L, KV * D));
            TRY(take_mats(m, &off, m->wv, (int)L, KV * D));
            TRY(take_mats(m, &off, m->wo, (int)L, D * D));
            TRY(take_f32(m, &off, L * D, &m->rms_ffn));
            TRY(take_mats(m, &off, m->w1, (int)L, H * D));
            TRY(take_mats(m, &off, m->w2, (int)L, D * H));
            TRY(take_mats(m, &off, m->w3, (int)L, H * D));
            TRY(take_f32(m, &off, D, &m->rms_final));
            off += (size_t)c->max_seq_len * (size_t)c->head_size * sizeof(float); /* stored RoPE tables */
        } else {
            /* v1 and v2: fp32 norms first, then the matrices */
            TRY(take_f32(m, &off, L * D, &m->rms_att));
            TRY(take_f32(m, &off, L * D, &m->rms_ffn));
            TRY(take_f32(m, &off, D, &m->rms_final));
            TRY(take_mats(m, &off, &m->tok, 1, V * D));
            TRY(take_mats(m, &off, m->wq, (int)L, D * D));
            TRY(take_mats(m, &off, m->wk, (int)L, KV * D));
            TRY(take_mats(m, &off, m->wv, (int)L, KV * D));
            TRY(take_mats(m, &off, m->wo, (int)L, D * D));
            TRY(take_mats(m, &off, m->w1, (int)L, H * D));
            TRY(take_mats(m, &off, m->w2, (int)L, D * H));
            TRY(take_mats(m, &off, m->w3, (int)L, H * D));
        }
        if (c->shared_classifier) m->cls = m->tok;
        else TRY(take_mats(m, &off, &m->cls, 1, V * D));
    } while (0);
#undef TRY
    if (rc != RUNC_OK) return runc_set_error(err, rc, "out of memory while mapping the weights");
    if (off != m->size) /* cannot happen after runc_parse_header; a guard for the layout code */
        return runc_set_error(err, RUNC_E_TRUNCATED, "internal error: tensor layout ends at %zu of %zu bytes", off,
                         m->size);

    /* RoPE frequencies, computed in float as the PyTorch reference does */
    for (i = 0; i < half; i++)
        m->rope_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_size);
    return RUNC_OK;
}

void runc_model_close(runc_model *m)
{
    size_t i;
    if (!m) return;
    for (i = 0; i < m->n_allocs; i++) free(m->allocs[i]);
    free(m->allocs);
    free(m->mats);
    free(m->rope_freq);
    free(m->owned);
#if RUNC_HAVE_MMAP
    if (m->map) munmap(m->map, m->size);
#endif
    free(m);
}

/* Index of the first NaN or infinite value of p[0..n), or n. Blocks are
 * scanned branch-free (it vectorises), and only a bad block is searched. */
static size_t first_nonfinite(const float *p, size_t n)
{
    size_t i = 0, j;
    while (i < n) {
        size_t end = n - i > 1024 ? i + 1024 : n;
        uint32_t bad = 0;
        for (j = i; j < end; j++) {
            uint32_t b;
            memcpy(&b, p + j, sizeof b);
            bad |= (uint32_t)((b & 0x7F800000u) == 0x7F800000u);
        }
        if (bad)
            for (j = i; j < end; j++) {
                uint32_t b;
                memcpy(&b, p + j, sizeof b);
                if ((b & 0x7F800000u) == 0x7F800000u) return j;
            }
        i = end;
    }
    return n;
}

/* One fp32 tensor (or a matrix's Q8_0 scales, scales = 1) must be finite
 * (and the scales >= 0). layer < 0: not a per-layer tensor. */
static int check_floats(const float *p, size_t n, const char *name, int layer, int scales, runc_error *err)
{
    char where[48];
    size_t i = first_nonfinite(p, n);
    if (layer >= 0) snprintf(where, sizeof where, "%s (layer %d)", name, layer);
    else snprintf(where, sizeof where, "%s", name);
    if (i < n) {
        float v;
        memcpy(&v, p + i, sizeof v);
        return runc_set_error(err, RUNC_E_WEIGHT, "%s %s has a %s value at index %zu", where,
                         scales ? "Q8_0 scale" : "weight", v != v ? "NaN" : "infinite", i);
    }
    if (scales)
        for (i = 0; i < n; i++)
            if (p[i] < 0.0f)
                return runc_set_error(err, RUNC_E_WEIGHT, "%s Q8_0 scale %zu is negative (%g); scales are max|w|/127",
                                 where, i, (double)p[i]);
    return RUNC_OK;
}

/* Every weight finite, every Q8_0 scale >= 0 (see runc_model_open). */
static int check_weights(const runc_model *m, runc_error *err)
{
    static const char *const names[7] = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
    const runc_config *c = &m->cfg;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)c->kv_dim, V = (size_t)c->vocab_size;
    size_t counts[7];
    int q = c->version == 2, l, k, rc;
    size_t div = q ? (size_t)c->group_size : 1;
    counts[0] = counts[3] = D * D;
    counts[1] = counts[2] = KV * D;
    counts[4] = counts[5] = counts[6] = H * D;
    for (l = 0; l < c->n_layers; l++) {
        if ((rc = check_floats(m->rms_att + (size_t)l * D, D, "rms_att", l, 0, err)) != RUNC_OK) return rc;
        if ((rc = check_floats(m->rms_ffn + (size_t)l * D, D, "rms_ffn", l, 0, err)) != RUNC_OK) return rc;
    }
    if ((rc = check_floats(m->rms_final, D, "rms_final", -1, 0, err)) != RUNC_OK) return rc;
    rc = check_floats(q ? m->tok.s : m->tok.f, V * D / div, "token embedding", -1, q, err);
    if (rc == RUNC_OK && !c->shared_classifier)
        rc = check_floats(q ? m->cls.s : m->cls.f, V * D / div, "classifier", -1, q, err);
    for (k = 0; k < 7 && rc == RUNC_OK; k++)
        for (l = 0; l < c->n_layers && rc == RUNC_OK; l++) {
            const runc_mat *w = &m->mats[(size_t)k * (size_t)c->n_layers + (size_t)l];
            rc = check_floats(q ? w->s : w->f, counts[k] / div, names[k], l, q, err);
        }
    return rc;
}

/* Finish opening a model whose bytes are in m->data / m->size. */
static int model_finish(runc_model **out, runc_model *m, int flags, runc_error *err)
{
    int rc = runc_parse_header(m->data, m->size, &m->cfg, err);
    if (rc == RUNC_OK) rc = model_map_weights(m, err);
    if (rc == RUNC_OK && !(flags & RUNC_OPEN_NO_WEIGHT_CHECK)) rc = check_weights(m, err);
    if (rc != RUNC_OK) {
        runc_model_close(m);
        return rc;
    }
    *out = m;
    return runc_set_ok(err);
}

int runc_model_open_buffer(runc_model **out, const void *data, size_t size, int flags, runc_error *err)
{
    runc_model *m;
    int rc;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_model_open_buffer: NULL output pointer");
    *out = NULL;
    if (!data && size > 0) return runc_set_error(err, RUNC_E_ARG, "runc_model_open_buffer: NULL buffer");
    if (flags & ~RUNC_OPEN_FLAGS)
        return runc_set_error(err, RUNC_E_ARG, "runc_model_open_buffer: unknown flags 0x%x", (unsigned)flags);
    {
        /* reject a bad header before copying anything */
        runc_config c;
        rc = runc_parse_header(data, size, &c, err);
        if (rc != RUNC_OK) return rc;
    }
    m = (runc_model *)calloc(1, sizeof *m);
    if (!m) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    m->size = size;
    /* a misaligned caller buffer is copied once, so that fp32 tensors can be
     * used in place instead of one copy per tensor */
    if ((flags & RUNC_OPEN_COPY) || (uintptr_t)data % 16 != 0) {
        m->owned = (unsigned char *)malloc(size);
        if (!m->owned) {
            free(m);
            return runc_set_error(err, RUNC_E_NOMEM, "out of memory copying a %zu-byte model", size);
        }
        memcpy(m->owned, data, size);
        m->data = m->owned;
    } else {
        m->data = (const unsigned char *)data;
    }
    return model_finish(out, m, flags, err);
}

/* Read a whole file, validating the model header before reading the rest. */
static int read_model_file(runc_model *m, FILE *f, runc_error *err)
{
    unsigned char header[RUNC_V12_HEADER];
    size_t got, want;
    long end;
    runc_config c;
    int rc;

    /* fopen opens a directory on POSIX systems (ftell then says LONG_MAX
     * bytes); reading from one fails (EISDIR) */
    if (fgetc(f) == EOF && ferror(f)) return runc_set_error(err, RUNC_E_IO, "read error: %s", strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        return runc_set_error(err, RUNC_E_IO, "cannot determine the file size");
    if ((unsigned long)end > (unsigned long)RUNC_SIZE_LIMIT)
        return runc_set_error(err, RUNC_E_OVERFLOW, "file of %ld bytes is too large", end);
    m->size = (size_t)end;
    want = m->size < sizeof header ? m->size : sizeof header;
    got = fread(header, 1, want, f);
    if (got != want) return runc_set_error(err, RUNC_E_IO, "read error: %s", strerror(errno));
    /* runc_parse_header reads at most the first 256 bytes, which we have */
    rc = runc_parse_header(header, m->size, &c, err);
    if (rc != RUNC_OK) return rc;
    m->owned = (unsigned char *)malloc(m->size);
    if (!m->owned) return runc_set_error(err, RUNC_E_NOMEM, "out of memory reading %zu bytes", m->size);
    memcpy(m->owned, header, got);
    if (fread(m->owned + got, 1, m->size - got, f) != m->size - got)
        return runc_set_error(err, RUNC_E_IO, "short read (the file changed while reading?)");
    m->data = m->owned;
    return RUNC_OK;
}

int runc_model_open(runc_model **out, const char *path, int flags, runc_error *err)
{
    runc_model *m;
    FILE *f;
    int rc;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_model_open: NULL output pointer");
    *out = NULL;
    if (!path) return runc_set_error(err, RUNC_E_ARG, "runc_model_open: NULL path");
    if (flags & ~RUNC_OPEN_FLAGS)
        return runc_set_error(err, RUNC_E_ARG, "runc_model_open: unknown flags 0x%x", (unsigned)flags);
    if (!host_is_little_endian())
        return runc_set_error(err, RUNC_E_UNSUPPORTED, "model files are little-endian; this host is not");
    m = (runc_model *)calloc(1, sizeof *m);
    if (!m) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");

#if RUNC_HAVE_MMAP
    if (!(flags & RUNC_OPEN_NO_MMAP)) {
        struct stat st;
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            rc = runc_set_error(err, RUNC_E_IO, "cannot open model file: %s", strerror(errno));
            free(m);
            return prefix_path(err, rc, path);
        }
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            close(fd);
            free(m);
            return prefix_path(err, runc_set_error(err, RUNC_E_IO, "is a directory, not a model file"), path);
        }
        /* regular, non-empty files are mapped; anything else (pipes, empty
         * files) takes the read path below, which reports emptiness itself */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
            (unsigned long long)st.st_size <= (unsigned long long)RUNC_SIZE_LIMIT) {
            size_t size = (size_t)st.st_size;
            unsigned char head[RUNC_V12_HEADER];
            size_t want = size < sizeof head ? size : sizeof head;
            ssize_t n = read(fd, head, want);
            runc_config c;
            /* validate the header before mapping anything */
            if (n == (ssize_t)want) {
                rc = runc_parse_header(head, size, &c, err);
                if (rc != RUNC_OK) {
                    close(fd);
                    free(m);
                    return prefix_path(err, rc, path);
                }
                m->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
                if (m->map == MAP_FAILED) {
                    m->map = NULL; /* fall back to reading */
                } else {
                    close(fd);
                    m->data = (const unsigned char *)m->map;
                    m->size = size;
                    return prefix_path(err, model_finish(out, m, flags, err), path);
                }
            }
        }
        close(fd);
    }
#endif

    f = fopen(path, "rb");
    if (!f) {
        rc = runc_set_error(err, RUNC_E_IO, "cannot open model file: %s", strerror(errno));
        free(m);
        return prefix_path(err, rc, path);
    }
    rc = read_model_file(m, f, err);
    fclose(f);
    if (rc != RUNC_OK) {
        runc_model_close(m);
        return prefix_path(err, rc, path);
    }
    return prefix_path(err, model_finish(out, m, flags, err), path);
}

const runc_config *runc_model_config(const runc_model *m)
{
    return m ? &m->cfg : NULL;
}

/* ========================================================================== */
/* 3. tokenizer                                                                */
/* ========================================================================== */

typedef struct {
    const char *str;
    int len;
    int id;
} runc_piece_index;

struct runc_tokenizer {
    int vocab_size;
    int max_token_length;
    char *arena;                 /* every piece, NUL-terminated, back to back */
    const char **piece;          /* piece[id] points into arena */
    int *len;                    /* byte length of each piece */
    float *score;                /* merge score of each piece */
    runc_piece_index *sorted;    /* pieces sorted by bytes (then id), for lookups */
    int first[257];              /* sorted[first[c] .. first[c + 1]) start with byte c (empty pieces come before first[0]) */
    int byte_id[256];            /* id of the <0xXX> piece of each byte, or -1 */
    int space_id;                /* id of the " " piece, or -1 */
    unsigned char bytes[256];    /* bytes[b] == b: what a <0xXX> piece decodes to */
};

static int piece_cmp(const char *a, int alen, const char *b, int blen)
{
    int n = alen < blen ? alen : blen;
    int r = memcmp(a, b, (size_t)n);
    if (r != 0) return r;
    return (alen > blen) - (alen < blen);
}

static int piece_index_cmp(const void *pa, const void *pb)
{
    const runc_piece_index *a = (const runc_piece_index *)pa, *b = (const runc_piece_index *)pb;
    int r = piece_cmp(a->str, a->len, b->str, b->len);
    if (r != 0) return r;
    return (a->id > b->id) - (a->id < b->id);  /* duplicates: the lowest id is found first */
}

/* The id of the piece equal to str[0..len), or -1: a binary search among
 * the pieces that start with str's first byte (a few, in small vocabularies). */
static int piece_lookup(const runc_tokenizer *t, const char *str, int len)
{
    const int c = len > 0 ? (unsigned char)str[0] : -1;
    int lo = c >= 0 ? t->first[c] : 0, end = c >= 0 ? t->first[c + 1] : t->first[0], hi = end;
    while (lo < hi) { /* lower bound */
        int mid = lo + (hi - lo) / 2;
        if (piece_cmp(t->sorted[mid].str, t->sorted[mid].len, str, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < end && piece_cmp(t->sorted[lo].str, t->sorted[lo].len, str, len) == 0) return t->sorted[lo].id;
    return -1;
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* The byte a "<0xXX>" piece stands for, or -1 for any other piece. */
static int byte_piece_value(const char *s, int len)
{
    int hi, lo;
    if (len != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    hi = hex_value((unsigned char)s[3]);
    lo = hex_value((unsigned char)s[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/* Length of the longest valid UTF-8 prefix of s[0..n) (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;      /* overlong */
            else if (c == 0xED) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;      /* overlong */
            else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi) return i;
        if (need >= 2 && (s[i + 2] & 0xC0) != 0x80) return i;
        if (need == 3 && (s[i + 3] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

void runc_tokenizer_close(runc_tokenizer *t)
{
    if (!t) return;
    free(t->arena);
    free(t->piece);
    free(t->len);
    free(t->score);
    free(t->sorted);
    free(t);
}

int runc_tokenizer_open_buffer(runc_tokenizer **out, const void *data, size_t size, int vocab_size,
                               runc_error *err)
{
    const unsigned char *p = (const unsigned char *)data;
    runc_tokenizer *t;
    size_t off, arena_bytes = 0, a;
    int i, byte, max_len, longest = 0;

    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_tokenizer_open_buffer: NULL output pointer");
    *out = NULL;
    if (!data && size > 0) return runc_set_error(err, RUNC_E_ARG, "runc_tokenizer_open_buffer: NULL buffer");
    if (vocab_size <= 0 || vocab_size > RUNC_MAX_VOCAB)
        return runc_set_error(err, RUNC_E_ARG, "tokenizer vocab_size = %d must be in 1..%d", vocab_size,
                         RUNC_MAX_VOCAB);
    if (!host_is_little_endian())
        return runc_set_error(err, RUNC_E_UNSUPPORTED, "tokenizer files are little-endian; this host is not");
    if (size == 0) return runc_set_error(err, RUNC_E_EMPTY, "tokenizer file is empty");
    if (size < 4)
        return runc_set_error(err, RUNC_E_TRUNCATED, "tokenizer truncated: %zu bytes, too short for max_token_length",
                         size);
    max_len = rd_i32(p);
    if (max_len <= 0 || max_len > RUNC_MAX_TOKEN_LENGTH)
        return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer max_token_length = %d must be in 1..%d", max_len,
                         RUNC_MAX_TOKEN_LENGTH);

    if (size == 4)
        return runc_set_error(err, RUNC_E_TRUNCATED,
                         "tokenizer has no vocabulary: max_token_length and no tokens (the model has %d)",
                         vocab_size);

    /* pass 1: validate every entry before allocating anything per token */
    off = 4;
    for (i = 0; i < vocab_size; i++) {
        float score;
        int32_t len;
        if (size - off < 8)
            return runc_set_error(err, RUNC_E_TRUNCATED,
                             "tokenizer truncated at token %d of %d (%zu bytes; a tokenizer of a model "
                             "with a smaller vocabulary?)",
                             i, vocab_size, size);
        score = rd_f32(p + off);
        len = rd_i32(p + off + 4);
        if (score != score) return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer token %d has a NaN score", i);
        if (len < 0)
            return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer token %d has a negative length %ld", i,
                             (long)len);
        if (len > max_len)
            return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer token %d is %ld bytes, over max_token_length %d",
                             i, (long)len, max_len);
        if (len == 0) return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer token %d is an empty piece", i);
        off += 8;
        if (size - off < (size_t)len)
            return runc_set_error(err, RUNC_E_TRUNCATED, "tokenizer truncated inside token %d of %d", i, vocab_size);
        {
            size_t ok = utf8_valid_prefix(p + off, (size_t)len);
            const unsigned char *nul = (const unsigned char *)memchr(p + off, 0, (size_t)len);
            /* a NUL would end every C string holding the piece: an answer cut short */
            if (nul)
                return runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer token %d holds a NUL byte (at offset %zu of the piece)",
                                      i, (size_t)(nul - (p + off)));
            if (ok < (size_t)len)
                return runc_set_error(err, RUNC_E_TOKENIZER,
                                 "tokenizer token %d is not valid UTF-8 (byte 0x%02X at offset %zu of the piece)", i,
                                 p[off + ok], ok);
        }
        off += (size_t)len;
        arena_bytes += (size_t)len + 1;
        if (len > longest) longest = len;
    }
    if (off != size)
        return runc_set_error(err, RUNC_E_VOCAB,
                         "tokenizer has %zu bytes after the %d tokens of the model's vocabulary (a "
                         "tokenizer of another model?)",
                         size - off, vocab_size);

    t = (runc_tokenizer *)calloc(1, sizeof *t);
    if (!t) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    t->vocab_size = vocab_size;
    /* the longest piece, not the header's bound: buffers sized from it (the encoder's pair,
     * runc_answer_cap, callers' decode buffers) then follow the real vocabulary, not a
     * header claiming 65536 */
    t->max_token_length = longest;
    t->arena = (char *)malloc(arena_bytes);
    t->piece = (const char **)malloc((size_t)vocab_size * sizeof *t->piece);
    t->len = (int *)malloc((size_t)vocab_size * sizeof *t->len);
    t->score = (float *)malloc((size_t)vocab_size * sizeof *t->score);
    t->sorted = (runc_piece_index *)malloc((size_t)vocab_size * sizeof *t->sorted);
    if (!t->arena || !t->piece || !t->len || !t->score || !t->sorted) {
        runc_tokenizer_close(t);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory for a %d-token vocabulary", vocab_size);
    }

    /* pass 2: copy */
    off = 4;
    a = 0;
    for (i = 0; i < vocab_size; i++) {
        int len = (int)rd_i32(p + off + 4);
        t->score[i] = rd_f32(p + off);
        off += 8;
        memcpy(t->arena + a, p + off, (size_t)len);
        t->arena[a + (size_t)len] = '\0';
        t->piece[i] = t->arena + a;
        t->len[i] = len;
        t->sorted[i].str = t->piece[i];
        t->sorted[i].len = len;
        t->sorted[i].id = i;
        off += (size_t)len;
        a += (size_t)len + 1;
    }
    qsort(t->sorted, (size_t)vocab_size, sizeof *t->sorted, piece_index_cmp);
    for (i = 0, byte = 0; byte < 257; byte++) { /* memcmp's order: by first byte (unsigned), empty pieces first */
        while (i < vocab_size &&
               (t->sorted[i].len == 0 || (byte < 256 && (unsigned char)t->sorted[i].str[0] < byte)))
            i++;
        t->first[byte] = byte < 256 ? i : vocab_size;
    }
    /* equal pieces sort next to each other: the encoder could reach only one of them */
    for (i = 1; i < vocab_size; i++) {
        const runc_piece_index *x = &t->sorted[i - 1], *y = &t->sorted[i];
        if (piece_cmp(x->str, x->len, y->str, y->len) == 0) {
            char shown[40];
            int j, k = 0;
            for (j = 0; j < x->len && k < (int)sizeof shown - 5; j++) {
                unsigned char ch = (unsigned char)x->str[j];
                if (ch >= 0x20 && ch < 0x7F && ch != '\\') shown[k++] = (char)ch;
                else k += snprintf(shown + k, sizeof shown - (size_t)k, "\\x%02X", ch);
            }
            shown[k] = '\0';
            i = runc_set_error(err, RUNC_E_TOKENIZER, "tokenizer tokens %d and %d are the same piece \"%s\"", x->id, y->id,
                          shown);
            runc_tokenizer_close(t);
            return i;
        }
    }

    /* byte fallback follows SentencePiece's layout: byte b is the piece
     * "<0xXX>" at id b + 3 (after <unk>, <s>, </s>); only those count */
    for (i = 0; i < 256; i++) {
        int id = i + 3;
        t->bytes[i] = (unsigned char)i;
        t->byte_id[i] = (id < vocab_size && byte_piece_value(t->piece[id], t->len[id]) == i) ? id : -1;
    }
    t->space_id = piece_lookup(t, " ", 1);
    *out = t;
    return runc_set_ok(err);
}

/* Read a whole (small) tokenizer file into memory, refusing one longer than
 * its first 4 bytes (max_token_length) and the vocabulary size allow: `limit`
 * (at most) is computed from them, and reading stops one byte past it, so
 * /dev/zero or an endless pipe cannot grow memory without bound. */
static int slurp_tokenizer(const char *path, int vocab_size, unsigned char **data, size_t *size, runc_error *err)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0, limit = RUNC_SIZE_LIMIT;
    *data = NULL;
    *size = 0;
    if (!f) return runc_set_error(err, RUNC_E_IO, "cannot open: %s", strerror(errno));
    for (;;) {
        size_t got, want;
        if (n >= 4 && limit == RUNC_SIZE_LIMIT) {
            /* every entry is at most 8 + max_token_length bytes; an absurd header field is
             * left for the parser to name (it gets only these 4 bytes then) */
            int32_t max_len = rd_i32(buf);
            size_t entry;
            if (max_len <= 0 || max_len > RUNC_MAX_TOKEN_LENGTH) break;
            if (mul_sz((size_t)vocab_size, 8 + (size_t)max_len, &entry) && add_sz(entry, 4, &limit)) {}
            else limit = RUNC_SIZE_LIMIT - 1;
            if (limit > RUNC_MAX_TOKENIZER_BYTES) limit = RUNC_MAX_TOKENIZER_BYTES;
        }
        if (n > limit) {
            free(buf);
            fclose(f);
            return runc_set_error(err, RUNC_E_VOCAB,
                                  "tokenizer is longer than %zu bytes, the most a %d-token vocabulary of pieces of at "
                                  "most max_token_length bytes can take (a tokenizer of another model, or not a "
                                  "tokenizer?)",
                                  limit, vocab_size);
        }
        if (n == cap) {
            unsigned char *grown;
            cap = cap ? 2 * cap : 65536;
            if (cap > RUNC_SIZE_LIMIT) {
                free(buf);
                fclose(f);
                return runc_set_error(err, RUNC_E_OVERFLOW, "file too large");
            }
            grown = (unsigned char *)realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return runc_set_error(err, RUNC_E_NOMEM, "out of memory reading the file");
            }
            buf = grown;
        }
        /* the first 4 bytes alone, then up to one byte past the limit */
        want = n < 4 ? 4 - n : (limit - n + 1 < cap - n ? limit - n + 1 : cap - n);
        got = fread(buf + n, 1, want, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        return runc_set_error(err, RUNC_E_IO, "read error: %s", strerror(e));
    }
    fclose(f);
    *data = buf;
    *size = n;
    return RUNC_OK;
}

int runc_tokenizer_open(runc_tokenizer **out, const char *path, int vocab_size, runc_error *err)
{
    unsigned char *data;
    size_t size;
    int rc;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_tokenizer_open: NULL output pointer");
    *out = NULL;
    if (!path) return runc_set_error(err, RUNC_E_ARG, "runc_tokenizer_open: NULL path");
    if (vocab_size <= 0 || vocab_size > RUNC_MAX_VOCAB)
        return prefix_path(err, runc_tokenizer_open_buffer(out, NULL, 0, vocab_size, err), path);
    rc = slurp_tokenizer(path, vocab_size, &data, &size, err);
    if (rc == RUNC_OK) {
        rc = runc_tokenizer_open_buffer(out, data, size, vocab_size, err);
        free(data);
    }
    return prefix_path(err, rc, path);
}

int runc_tokenizer_vocab_size(const runc_tokenizer *t)
{
    return t ? t->vocab_size : 0;
}

int runc_tokenizer_max_token_length(const runc_tokenizer *t)
{
    return t ? t->max_token_length : 0;
}

const char *runc_token_piece(const runc_tokenizer *t, int token, size_t *len)
{
    if (!t || token < 0 || token >= t->vocab_size) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = (size_t)t->len[token];
    return t->piece[token];
}

float runc_token_score(const runc_tokenizer *t, int token)
{
    if (!t || token < 0 || token >= t->vocab_size) return 0.0f;
    return t->score[token];
}

/* Describe the character at s[0..n) for an error message. */
static void describe_char(const unsigned char *s, size_t n, char *out, size_t cap)
{
    unsigned long cp = 0;
    size_t need = 0, i;
    if (s[0] < 0x80) {
        need = 1;
        cp = s[0];
    } else if ((s[0] & 0xE0) == 0xC0) {
        need = 2;
        cp = s[0] & 0x1Fu;
    } else if ((s[0] & 0xF0) == 0xE0) {
        need = 3;
        cp = s[0] & 0x0Fu;
    } else if ((s[0] & 0xF8) == 0xF0) {
        need = 4;
        cp = s[0] & 0x07u;
    }
    if (need == 0 || need != n) {
        snprintf(out, cap, "byte 0x%02X (not valid UTF-8)", s[0]);
        return;
    }
    for (i = 1; i < n; i++) cp = (cp << 6) | (s[i] & 0x3Fu);
    if (cp >= 0x20 && cp != 0x7F && (cp < 0x80 || cp >= 0xA0))
        snprintf(out, cap, "character '%.*s' (U+%04lX)", (int)n, (const char *)s, cp);
    else
        snprintf(out, cap, "character U+%04lX", cp);
}

int runc_encode(const runc_tokenizer *t, const char *text, int bos, int eos, int *tokens, int cap,
                int *n_tokens, runc_error *err)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i, n_text;
    int n = 0;
    char *pair, small[128];

    if (n_tokens) *n_tokens = 0;
    if (!t || !text || !n_tokens || (!tokens && cap > 0) || cap < 0)
        return runc_set_error(err, RUNC_E_ARG, "runc_encode: NULL argument or negative capacity");
    n_text = strlen(text);

#define PUSH(id)                                                                                   \
    do {                                                                                           \
        if (n >= cap)                                                                              \
            return runc_set_error(err, RUNC_E_BUFFER, "token buffer of %d too small for the text", cap); \
        tokens[n++] = (id);                                                                        \
    } while (0)

    if (bos) {
        if (t->vocab_size <= RUNC_TOKEN_BOS)
            return runc_set_error(err, RUNC_E_VOCAB, "vocabulary of %d tokens has no BOS (id 1)", t->vocab_size);
        PUSH(RUNC_TOKEN_BOS);
    }
    /* SentencePiece's add_dummy_prefix: a leading space before non-empty text */
    if (n_text > 0) {
        if (t->space_id >= 0) PUSH(t->space_id);
        else if (t->byte_id[' '] >= 0) PUSH(t->byte_id[' ']);
        else return runc_set_error(err, RUNC_E_ENCODE, "the vocabulary has no \" \" piece for the dummy prefix");
    }
    /* one token per UTF-8 code point (a lead byte and up to 3 continuation
     * bytes), or per byte through the <0xXX> fallback pieces */
    for (i = 0; i < n_text;) {
        size_t j = i + 1;
        int id;
        while (j < n_text && (s[j] & 0xC0) == 0x80 && j - i < 4) j++;
        id = piece_lookup(t, text + i, (int)(j - i));
        if (id >= 0) {
            PUSH(id);
        } else {
            size_t k;
            for (k = i; k < j; k++) {
                if (t->byte_id[s[k]] < 0) {
                    char what[64];
                    describe_char(s + i, j - i, what, sizeof what);
                    return runc_set_error(err, RUNC_E_ENCODE,
                                     "cannot encode %s at byte %zu: not in the vocabulary, which has no "
                                     "byte-fallback pieces",
                                     what, i);
                }
                PUSH(t->byte_id[s[k]]);
            }
        }
        i = j;
    }

    /* merge the adjacent pair whose concatenation is the best-scoring piece,
     * until no adjacent pair forms a piece */
    /* (on the stack for the usual short pieces: the batch engine encodes each
     * problem as it takes it, and allocates nothing while solving) */
    pair = 2 * (size_t)t->max_token_length + 1 <= sizeof small ? small
                                                             : (char *)malloc(2 * (size_t)t->max_token_length + 1);
    if (!pair) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    for (;;) {
        int k, best_k = -1, best_id = -1;
        float best_score = -INFINITY; /* a piece scored -inf is never merged into */
        for (k = bos ? 1 : 0; k + 1 < n; k++) {
            int a = tokens[k], b = tokens[k + 1], id;
            memcpy(pair, t->piece[a], (size_t)t->len[a]);
            memcpy(pair + t->len[a], t->piece[b], (size_t)t->len[b]);
            id = piece_lookup(t, pair, t->len[a] + t->len[b]);
            if (id >= 0 && t->score[id] > best_score) {
                best_score = t->score[id];
                best_id = id;
                best_k = k;
            }
        }
        if (best_k < 0) break;
        tokens[best_k] = best_id;
        memmove(tokens + best_k + 1, tokens + best_k + 2, (size_t)(n - best_k - 2) * sizeof *tokens);
        n--;
    }
    if (pair != small) free(pair);

    if (eos) {
        if (t->vocab_size <= RUNC_TOKEN_EOS)
            return runc_set_error(err, RUNC_E_VOCAB, "vocabulary of %d tokens has no EOS (id 2)", t->vocab_size);
        PUSH(RUNC_TOKEN_EOS);
    }
#undef PUSH
    *n_tokens = n;
    return runc_set_ok(err);
}

int runc_decode_piece(const runc_tokenizer *t, int prev_token, int token, const char **piece, size_t *len)
{
    const char *p;
    int n, b;
    if (piece) *piece = "";
    if (len) *len = 0;
    if (!t || !piece || !len || token < 0 || token >= t->vocab_size) return RUNC_E_ARG;
    if (token == RUNC_TOKEN_BOS || token == RUNC_TOKEN_EOS) return RUNC_OK; /* control tokens: no text */
    p = t->piece[token];
    n = t->len[token];
    /* SentencePiece drops the dummy-prefix space of the first piece after BOS */
    if (prev_token == RUNC_TOKEN_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    b = byte_piece_value(p, n);
    if (b >= 0) {
        p = (const char *)t->bytes + b;
        n = 1;
    }
    *piece = p;
    *len = (size_t)n;
    return RUNC_OK;
}

int runc_decode(const runc_tokenizer *t, int prev_token, const int *tokens, int n, char *out, size_t cap,
                size_t *out_len, runc_error *err)
{
    size_t used = 0;
    int i;
    if (out_len) *out_len = 0;
    if (!t || (!tokens && n > 0) || n < 0 || (!out && cap > 0))
        return runc_set_error(err, RUNC_E_ARG, "runc_decode: NULL argument or negative count");
    for (i = 0; i < n; i++) {
        const char *piece;
        size_t len;
        if (runc_decode_piece(t, prev_token, tokens[i], &piece, &len) != RUNC_OK)
            return runc_set_error(err, RUNC_E_ARG, "runc_decode: token %d out of range [0, %d)", tokens[i],
                             t->vocab_size);
        if (used + len < cap) memcpy(out + used, piece, len);
        used += len;
        prev_token = tokens[i];
    }
    if (out_len) *out_len = used;
    if (used + 1 > cap) {
        if (cap > 0) out[0] = '\0';
        return runc_set_error(err, RUNC_E_BUFFER, "decoded text is %zu bytes, the buffer holds %zu", used + 1, cap);
    }
    out[used] = '\0';
    return runc_set_ok(err);
}

/* ========================================================================== */
/* 4. forward                                                                  */
/* ========================================================================== */

struct runc_state {
    const runc_model *model;
    int context;                 /* positions this state can hold (<= max_seq_len) */
    int max_answer;              /* tokens runc_solve may generate (runc_state_set_max_answer) */
    float *x;                    /* residual stream (dim) */
    float *xb, *xb2;             /* branch buffers (dim) */
    float *hb, *hb2;             /* feed-forward buffers (hidden_dim) */
    float *q;                    /* queries (dim) */
    float *att;                  /* attention scores (n_heads, context) */
    float *logits;               /* (vocab_size) */
    float *rope_cos, *rope_sin;  /* rotation of the current position (head_size/2) */
    float *key_cache;            /* (n_layers, context, kv_dim) */
    float *value_cache;          /* (n_layers, context, kv_dim) */
    int8_t *aq;                  /* Q8_0 activations (max(dim, hidden_dim)), version 2 */
    float *as;                   /* their group scales */
    int *ids;                    /* (context) the token run at each position: the cache holds */
    int n_cached;                /* positions 0..n_cached-1 of ids, a prefix a new prompt may reuse */
    long long tokens;            /* tokens run since open */
};

void runc_state_close(runc_state *s)
{
    if (!s) return;
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->att);
    free(s->logits);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->key_cache);
    free(s->value_cache);
    free(s->aq);
    free(s->as);
    free(s->ids);
    free(s);
}

static void *alloc_floats(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

int runc_state_open(runc_state **out, const runc_model *m, int context, runc_error *err)
{
    const runc_config *c;
    runc_state *s;
    size_t cache, att, widest;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_state_open: NULL output pointer");
    *out = NULL;
    if (!m) return runc_set_error(err, RUNC_E_ARG, "runc_state_open: NULL model");
    c = &m->cfg;
    if (context == 0) context = c->max_seq_len;
    if (context < 0 || context > c->max_seq_len)
        return runc_set_error(err, RUNC_E_ARG, "context %d must be in 1..max_seq_len (%d), or 0 for all of it",
                         context, c->max_seq_len);
    /* n_layers * context alone reaches 2^32 within the field caps: checked too */
    if (!mul_sz((size_t)c->n_layers, (size_t)context, &cache) || !mul_sz(cache, (size_t)c->kv_dim, &cache) ||
        !mul_sz(cache, sizeof(float), &cache) || !mul_sz((size_t)c->n_heads, (size_t)context, &att))
        return runc_set_error(err, RUNC_E_OVERFLOW, "KV cache for a context of %d overflows", context);
    s = (runc_state *)calloc(1, sizeof *s);
    if (!s) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    s->model = m;
    s->context = context;
    s->max_answer = RUNC_DEFAULT_MAX_ANSWER;
    widest = (size_t)(c->dim > c->hidden_dim ? c->dim : c->hidden_dim);
    s->x = (float *)alloc_floats((size_t)c->dim);
    s->xb = (float *)alloc_floats((size_t)c->dim);
    s->xb2 = (float *)alloc_floats((size_t)c->dim);
    s->hb = (float *)alloc_floats((size_t)c->hidden_dim);
    s->hb2 = (float *)alloc_floats((size_t)c->hidden_dim);
    s->q = (float *)alloc_floats((size_t)c->dim);
    s->att = (float *)alloc_floats(att);
    s->logits = (float *)alloc_floats((size_t)c->vocab_size);
    s->rope_cos = (float *)alloc_floats((size_t)c->head_size / 2);
    s->rope_sin = (float *)alloc_floats((size_t)c->head_size / 2);
    s->key_cache = (float *)alloc_floats(cache / sizeof(float));
    s->value_cache = (float *)alloc_floats(cache / sizeof(float));
    s->aq = (int8_t *)calloc(widest, 1);
    s->as = (float *)alloc_floats(widest);
    s->ids = (int *)calloc((size_t)context, sizeof(int));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->att || !s->logits || !s->rope_cos ||
        !s->rope_sin || !s->key_cache || !s->value_cache || !s->aq || !s->as || !s->ids) {
        runc_state_close(s);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory for a run state (KV cache of %zu bytes)", 2 * cache);
    }
    *out = s;
    return runc_set_ok(err);
}

int runc_max_answer_arg(int max_answer, int *out, runc_error *err)
{
    if (max_answer < 0 || max_answer > RUNC_MAX_SEQ_LEN)
        return runc_set_error(err, RUNC_E_ARG, "max_answer = %d must be in 1..%d, or 0 for the default (%d)",
                              max_answer, RUNC_MAX_SEQ_LEN, RUNC_DEFAULT_MAX_ANSWER);
    *out = max_answer ? max_answer : RUNC_DEFAULT_MAX_ANSWER;
    return runc_set_ok(err);
}

int runc_state_set_max_answer(runc_state *s, int max_answer, runc_error *err)
{
    if (!s) return runc_set_error(err, RUNC_E_ARG, "runc_state_set_max_answer: NULL state");
    return runc_max_answer_arg(max_answer, &s->max_answer, err);
}

int runc_state_max_answer(const runc_state *s)
{
    return s ? s->max_answer : 0;
}

int runc_state_context(const runc_state *s)
{
    return s ? s->context : 0;
}

long long runc_state_tokens(const runc_state *s)
{
    return s ? s->tokens : 0;
}

const runc_model *runc_state_model(const runc_state *s)
{
    return s ? s->model : NULL;
}

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps)
{
    float ss = 0.0f, scale;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = weight[i] * (scale * x[i]);
}

static void softmax(float *x, int n)
{
    float max = x[0], sum = 0.0f;
    int i;
    for (i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    for (i = 0; i < n; i++) x[i] = runc_expf(x[i] - max); /* a loop of its own: it vectorises */
    for (i = 0; i < n; i++) sum += x[i];
    for (i = 0; i < n; i++) x[i] /= sum;
}

/* out (d) = W (d x n) @ x (n). Eight independent partial sums make the inner
 * loop vectorise without -ffast-math (the compiler may not reorder one float
 * accumulator); it is the kernel a batched matrix-matrix version generalises. */
static void matmul_f32(float *restrict out, const float *restrict x, const float *restrict w, int n, int d)
{
    int i;
    for (i = 0; i < d; i++) {
        const float *restrict row = w + (size_t)i * (size_t)n;
        float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        float sum;
        int j = 0, k;
        for (; j + 8 <= n; j += 8)
            for (k = 0; k < 8; k++) acc[k] += row[j + k] * x[j + k];
        sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; j < n; j++) sum += row[j] * x[j];
        out[i] = sum;
    }
}

/* Q8_0 activations: symmetric int8 in groups of gs, scale = max|x| / 127
 * (llama2.c's runq.c), so that the matmul is int8 x int8 -> int32 per group. */
static void quantize_q8(int8_t *restrict q, float *restrict scales, const float *restrict x, int n, int gs)
{
    int g, i, groups = n / gs;
    for (g = 0; g < groups; g++) {
        const float *xg = x + (size_t)g * (size_t)gs;
        float wmax = 0.0f, scale;
        for (i = 0; i < gs; i++) {
            float a = fabsf(xg[i]);
            if (a > wmax) wmax = a;
        }
        scale = wmax / 127.0f;
        scales[g] = scale;
        for (i = 0; i < gs; i++) {
            /* x / scale, not x * (1 / scale): the same rounding as runq.c */
            float v = scale > 0.0f ? roundf(xg[i] / scale) : 0.0f;
            if (v > 127.0f) v = 127.0f;
            else if (v < -127.0f) v = -127.0f;
            else if (v != v) v = 0.0f; /* NaN activations: a defined value */
            q[(size_t)g * (size_t)gs + i] = (int8_t)v;
        }
    }
}

/* out (d) = W (d x n, Q8_0) @ x (n, Q8_0): exact int32 dot products per group,
 * scaled by both groups' scales and summed in float. */
static void matmul_q8(float *restrict out, const int8_t *restrict xq, const float *restrict xs,
                      const int8_t *restrict wq, const float *restrict ws, int n, int d, int gs)
{
    int i, g, k, groups = n / gs;
    for (i = 0; i < d; i++) {
        const int8_t *restrict row = wq + (size_t)i * (size_t)n;
        const float *restrict rs = ws + (size_t)i * (size_t)groups;
        float val = 0.0f;
        for (g = 0; g < groups; g++) {
            const int8_t *restrict a = row + (size_t)g * (size_t)gs;
            const int8_t *restrict b = xq + (size_t)g * (size_t)gs;
            int32_t acc = 0;
            for (k = 0; k < gs; k++) acc += (int32_t)a[k] * (int32_t)b[k];
            val += (float)acc * rs[g] * xs[g];
        }
        out[i] = val;
    }
}

/* Prepare x (n) as the input of the following matmuls (quantize it for v2). */
static void matmul_input(runc_state *s, const float *x, int n)
{
    if (s->model->cfg.version == 2) quantize_q8(s->aq, s->as, x, n, s->model->cfg.group_size);
}

/* out (d) = W @ the input last given to matmul_input (x, n). */
static void matmul(runc_state *s, float *out, const float *x, const runc_mat *w, int n, int d)
{
    if (s->model->cfg.version == 2) matmul_q8(out, s->aq, s->as, w->q, w->s, n, d, s->model->cfg.group_size);
    else matmul_f32(out, x, w->f, n, d);
}

/* Rotate channel pairs (0,1), (2,3), ... of each head by the position's angles
 * (llama2.c's interleaved convention). */
static void rope(float *vec, int n_heads, int head_size, const float *cosv, const float *sinv)
{
    int h, i;
    for (h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * (size_t)head_size;
        for (i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cosv[i] - v1 * sinv[i];
            v[2 * i + 1] = v0 * sinv[i] + v1 * cosv[i];
        }
    }
}

/* runc_forward; with bad_layer non-NULL (runc_nonfinite_error) also the
 * first layer whose output is not finite, or -1 (left as is when none). */
static int forward(runc_state *s, int token, int pos, const float **logits, int *bad_layer, runc_error *err);

int runc_forward(runc_state *s, int token, int pos, const float **logits, runc_error *err)
{
    return forward(s, token, pos, logits, NULL, err);
}

static int forward(runc_state *s, int token, int pos, const float **logits, int *bad_layer, runc_error *err)
{
    const runc_model *m;
    const runc_config *c;
    int D, H, KV, hs, kv_mul, l, h, i, t;
    float att_scale;
    float *x;

    if (logits) *logits = NULL;
    if (!s) return runc_set_error(err, RUNC_E_ARG, "runc_forward: NULL state");
    m = s->model;
    c = &m->cfg;
    if (token < 0 || token >= c->vocab_size)
        return runc_set_error(err, RUNC_E_ARG, "token %d out of range [0, %d)", token, c->vocab_size);
    if (pos < 0 || pos >= s->context)
        return runc_set_error(err, RUNC_E_CONTEXT, "position %d outside the context [0, %d)", pos, s->context);
    D = c->dim;
    H = c->hidden_dim;
    KV = c->kv_dim;
    hs = c->head_size;
    kv_mul = c->n_heads / c->n_kv_heads;
    att_scale = 1.0f / sqrtf((float)hs);
    x = s->x;

    /* token embedding (a v2 row is dequantized: its groups start at the row) */
    if (c->version == 2) {
        const int8_t *q = m->tok.q + (size_t)token * (size_t)D;
        const float *sc = m->tok.s + (size_t)token * (size_t)(D / c->group_size);
        for (i = 0; i < D; i++) x[i] = (float)q[i] * sc[i / c->group_size];
    } else {
        memcpy(x, m->tok.f + (size_t)token * (size_t)D, (size_t)D * sizeof(float));
    }
    for (i = 0; i < hs / 2; i++) {
        float angle = (float)pos * m->rope_freq[i];
        s->rope_cos[i] = cosf(angle);
        s->rope_sin[i] = sinf(angle);
    }

    for (l = 0; l < c->n_layers; l++) {
        size_t layer = (size_t)l * (size_t)s->context;
        float *k_row = s->key_cache + (layer + (size_t)pos) * (size_t)KV;
        float *v_row = s->value_cache + (layer + (size_t)pos) * (size_t)KV;
        /* without logits, the last layer's keys and values are all that later
         * positions read: the rest of the layer feeds only the classifier */
        const int keys_only = !logits && l == c->n_layers - 1;

        /* attention: q, k, v; k and v go straight into the cache */
        rmsnorm(s->xb, x, m->rms_att + (size_t)l * (size_t)D, D, c->norm_eps);
        matmul_input(s, s->xb, D);
        if (!keys_only) matmul(s, s->q, s->xb, &m->wq[l], D, D);
        matmul(s, k_row, s->xb, &m->wk[l], D, KV);
        matmul(s, v_row, s->xb, &m->wv[l], D, KV);
        rope(k_row, c->n_kv_heads, hs, s->rope_cos, s->rope_sin);
        if (keys_only) break;
        rope(s->q, c->n_heads, hs, s->rope_cos, s->rope_sin);

        for (h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + (size_t)h * (size_t)hs;
            float *att = s->att + (size_t)h * (size_t)s->context;
            float *outh = s->xb + (size_t)h * (size_t)hs;
            size_t kv_off = (size_t)(h / kv_mul) * (size_t)hs; /* grouped-query: shared kv head */
            for (t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + (layer + (size_t)t) * (size_t)KV + kv_off;
                float score = 0.0f;
                for (i = 0; i < hs; i++) score += qh[i] * kt[i];
                att[t] = score * att_scale;
            }
            softmax(att, pos + 1);
            for (i = 0; i < hs; i++) outh[i] = 0.0f;
            for (t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + (layer + (size_t)t) * (size_t)KV + kv_off;
                float a = att[t];
                for (i = 0; i < hs; i++) outh[i] += a * vt[i];
            }
        }
        matmul_input(s, s->xb, D);
        matmul(s, s->xb2, s->xb, &m->wo[l], D, D);
        for (i = 0; i < D; i++) x[i] += s->xb2[i];

        /* SwiGLU feed-forward: w2(silu(w1 x) * w3 x) */
        rmsnorm(s->xb, x, m->rms_ffn + (size_t)l * (size_t)D, D, c->norm_eps);
        matmul_input(s, s->xb, D);
        matmul(s, s->hb, s->xb, &m->w1[l], D, H);
        matmul(s, s->hb2, s->xb, &m->w3[l], D, H);
        for (i = 0; i < H; i++) {
            float v = s->hb[i];
            s->hb[i] = v / (1.0f + runc_expf(-v)) * s->hb2[i];
        }
        matmul_input(s, s->hb, H);
        matmul(s, s->xb, s->hb, &m->w2[l], H, D);
        for (i = 0; i < D; i++) x[i] += s->xb[i];
        if (bad_layer && *bad_layer < 0 && !runc_norm_finite(x, D)) *bad_layer = l;
    }

    if (logits) {
        rmsnorm(s->xb, x, m->rms_final, D, c->norm_eps);
        matmul_input(s, s->xb, D);
        matmul(s, s->logits, s->xb, &m->cls, D, c->vocab_size);
        *logits = s->logits;
    }
    /* what the cache now holds: position pos is token's, and later positions
     * rest on what pos held before (a caller that skipped positions leaves
     * the record at its last known prefix) */
    if (pos <= s->n_cached) {
        s->ids[pos] = token;
        s->n_cached = pos + 1;
    }
    s->tokens++;
    return runc_set_ok(err);
}

int runc_forward_tokens(runc_state *s, const int *tokens, int n, int pos0, float *out, runc_error *err)
{
    int i, rc;
    if (!s || (!tokens && n > 0) || n < 0)
        return runc_set_error(err, RUNC_E_ARG, "runc_forward_tokens: NULL argument or negative count");
    if (pos0 < 0 || n > s->context - pos0)
        return runc_set_error(err, RUNC_E_CONTEXT, "positions %d..%lld do not fit in the context of %d", pos0,
                         (long long)pos0 + n - 1, s->context);
    for (i = 0; i < n; i++) {
        const float *logits;
        rc = runc_forward(s, tokens[i], pos0 + i, out ? &logits : NULL, err);
        if (rc != RUNC_OK) return rc;
        if (out) {
            size_t V = (size_t)s->model->cfg.vocab_size;
            memcpy(out + (size_t)i * V, logits, V * sizeof(float));
        }
    }
    return runc_set_ok(err);
}

/* ========================================================================== */
/* 5. sampler                                                                  */
/* ========================================================================== */

typedef struct {
    float prob;
    int index;
} runc_prob_index;

struct runc_sampler {
    int vocab_size;
    float temperature;
    float topp;
    unsigned long long rng;      /* xorshift64* state, never 0 */
    float *probs;                /* (vocab_size) scratch */
    runc_prob_index *cand;       /* (vocab_size) top-p candidates */
};

int runc_sampler_open(runc_sampler **out, int vocab_size, float temperature, float topp,
                      unsigned long long seed, runc_error *err)
{
    runc_sampler *s;
    if (!out) return runc_set_error(err, RUNC_E_ARG, "runc_sampler_open: NULL output pointer");
    *out = NULL;
    if (vocab_size <= 0 || vocab_size > RUNC_MAX_VOCAB)
        return runc_set_error(err, RUNC_E_ARG, "sampler vocab_size = %d must be in 1..%d", vocab_size, RUNC_MAX_VOCAB);
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return runc_set_error(err, RUNC_E_ARG, "temperature %g must be finite and >= 0", (double)temperature);
    if (!(topp >= 0.0f && topp <= 1.0f))
        return runc_set_error(err, RUNC_E_ARG, "top-p %g must be in [0, 1]", (double)topp);
    s = (runc_sampler *)calloc(1, sizeof *s);
    if (!s) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull; /* xorshift never leaves state 0 */
    s->probs = (float *)malloc((size_t)vocab_size * sizeof *s->probs);
    s->cand = (runc_prob_index *)malloc((size_t)vocab_size * sizeof *s->cand);
    if (!s->probs || !s->cand) {
        runc_sampler_close(s);
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    }
    *out = s;
    return runc_set_ok(err);
}

void runc_sampler_close(runc_sampler *s)
{
    if (!s) return;
    free(s->probs);
    free(s->cand);
    free(s);
}

/* xorshift64* (Marsaglia's xorshift with Vigna's multiplier), upper 32 bits */
static uint32_t rng_u32(unsigned long long *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_f32(unsigned long long *state) /* uniform in [0, 1) */
{
    return (float)(rng_u32(state) >> 8) / 16777216.0f;
}

static int argmax(const float *x, int n)
{
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cand_cmp(const void *pa, const void *pb) /* by probability, descending; ties by id */
{
    const runc_prob_index *a = (const runc_prob_index *)pa, *b = (const runc_prob_index *)pb;
    if (a->prob > b->prob) return -1;
    if (a->prob < b->prob) return 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* log-softmax of logits at `token` (temperature 1) */
static float log_prob(const float *logits, int n, int token)
{
    float max = logits[argmax(logits, n)];
    double sum = 0.0;
    int i;
    for (i = 0; i < n; i++) sum += exp((double)(logits[i] - max));
    return (float)((double)(logits[token] - max) - log(sum));
}

int runc_sample(runc_sampler *s, const float *logits, int *token, float *logprob)
{
    int n, i, next;
    float coin;
    if (!s || !logits || !token) return RUNC_E_ARG;
    n = s->vocab_size;
    if (s->temperature == 0.0f) {
        next = argmax(logits, n);
    } else {
        float max = logits[argmax(logits, n)], sum = 0.0f, cdf = 0.0f;
        for (i = 0; i < n; i++) {
            s->probs[i] = expf((logits[i] - max) / s->temperature);
            sum += s->probs[i];
        }
        for (i = 0; i < n; i++) s->probs[i] /= sum;
        coin = rng_f32(&s->rng);
        next = n - 1; /* if rounding leaves the cdf short of the coin */
        if (s->topp <= 0.0f || s->topp >= 1.0f) {
            for (i = 0; i < n; i++) {
                cdf += s->probs[i];
                if (coin < cdf) {
                    next = i;
                    break;
                }
            }
        } else {
            /* nucleus: the smallest set of most likely tokens whose mass
             * exceeds topp. If the k-th most likely token is in it, the tokens
             * from the k-th on hold at least 1 - topp, each at most as likely
             * as the k-th, so it has p >= (1 - topp) / n: anything less can be
             * dropped before sorting. (llama2.c divides by n - 1, which for
             * topp < 1/n can drop every token.) */
            float cutoff = (1.0f - s->topp) / (float)n, mass = 0.0f, r;
            int nc = 0, last;
            for (i = 0; i < n; i++) {
                if (s->probs[i] >= cutoff) {
                    s->cand[nc].prob = s->probs[i];
                    s->cand[nc].index = i;
                    nc++;
                }
            }
            if (nc == 0) { /* only with NaN logits: take the argmax */
                s->cand[0].prob = 1.0f;
                s->cand[0].index = argmax(logits, n);
                nc = 1;
            }
            qsort(s->cand, (size_t)nc, sizeof *s->cand, cand_cmp);
            last = nc - 1;
            for (i = 0; i < nc; i++) {
                mass += s->cand[i].prob;
                if (mass > s->topp) {
                    last = i;
                    break;
                }
            }
            r = coin * mass;
            next = s->cand[last].index;
            for (i = 0; i <= last; i++) {
                cdf += s->cand[i].prob;
                if (r < cdf) {
                    next = s->cand[i].index;
                    break;
                }
            }
        }
    }
    *token = next;
    if (logprob) *logprob = log_prob(logits, n, next);
    return RUNC_OK;
}

/* ========================================================================== */
/* 6. generation and the TinyMath problem convention                           */
/* ========================================================================== */

int runc_nonfinite_error(const runc_model *m, const int *tokens, int n, runc_error *err)
{
    runc_state *s = NULL;
    int pos, layer = -1, rc = RUNC_OK;
    if (n >= 1 && n <= m->cfg.max_seq_len && runc_state_open(&s, m, n, NULL) == RUNC_OK) {
        for (pos = 0; pos < n && layer < 0 && rc == RUNC_OK; pos++) {
            const float *logits;
            rc = forward(s, tokens[pos], pos, &logits, &layer, NULL);
        }
        runc_state_close(s);
        if (layer >= 0)
            return runc_set_error(err, RUNC_E_NONFINITE,
                                  "the forward pass overflowed: the output of layer %d (of %d) overflows float32 at "
                                  "position %d (weights too large?)",
                                  layer, m->cfg.n_layers, pos - 1);
        if (rc == RUNC_OK)
            return runc_set_error(err, RUNC_E_NONFINITE,
                                  "the forward pass overflowed: the classifier gave a non-finite logit at position %d "
                                  "(weights too large?)",
                                  n - 1);
    }
    return runc_set_error(err, RUNC_E_NONFINITE, "the forward pass overflowed: a non-finite logit at position %d", n - 1);
}

/* The error of a non-finite logit after prompt[0..n_prompt) and out[0..n_out). */
static int nonfinite_error(const runc_model *m, const int *prompt, int n_prompt, const int *out, int n_out,
                           runc_error *err)
{
    int *all = (int *)malloc(((size_t)n_prompt + (size_t)n_out) * sizeof *all), rc;
    if (!all)
        return runc_set_error(err, RUNC_E_NONFINITE, "the forward pass overflowed: a non-finite logit at position %d",
                              n_prompt + n_out - 1);
    memcpy(all, prompt, (size_t)n_prompt * sizeof *all);
    if (n_out) memcpy(all + n_prompt, out, (size_t)n_out * sizeof *all);
    rc = runc_nonfinite_error(m, all, n_prompt + n_out, err);
    free(all);
    return rc;
}

/* The shared loop of runc_generate and runc_solve; sampler NULL = greedy (and
 * the problem convention: every step's logits must be finite). */
static int generate_loop(runc_state *s, runc_sampler *smp, const int *prompt, int n_prompt, int max_new,
                         int stop_token, int *out, float *out_logprobs, int *n_out, runc_error *err)
{
    const float *logits;
    int n = 0, rc, V = s->model->cfg.vocab_size, reused;
    *n_out = 0;
    if (n_prompt < 1 || n_prompt >= s->context)
        return runc_set_error(err, RUNC_E_CONTEXT,
                         "prompt of %d tokens does not fit: the context holds %d and the answer needs at "
                         "least one position",
                         n_prompt, s->context);
    /* the prompt's first tokens whose keys and values the cache still holds
     * (the previous prompt began the same way) are not run again */
    reused = runc_reusable(s->ids, s->n_cached, prompt, n_prompt);
    rc = runc_forward_tokens(s, prompt + reused, n_prompt - 1 - reused, reused, NULL, err);
    if (rc == RUNC_OK) rc = runc_forward(s, prompt[n_prompt - 1], n_prompt - 1, &logits, err);
    if (rc != RUNC_OK) return rc;
    /* a generated token takes position n_prompt + n; it is fed back only when
     * another token may follow it */
    while (n < max_new && n_prompt + n < s->context) {
        int tok;
        float lp = 0.0f;
        if (!smp && !runc_step_finite(logits, V, s->x, s->model->cfg.dim))
            return nonfinite_error(s->model, prompt, n_prompt, out, n, err);
        if (smp) runc_sample(smp, logits, &tok, out_logprobs ? &lp : NULL);
        else {
            tok = argmax(logits, V);
            if (out_logprobs) lp = log_prob(logits, V, tok);
        }
        if (tok == stop_token) break;
        out[n] = tok;
        if (out_logprobs) out_logprobs[n] = lp;
        n++;
        if (n == max_new || n_prompt + n >= s->context) break;
        rc = runc_forward(s, tok, n_prompt + n - 1, &logits, err);
        if (rc != RUNC_OK) return rc;
    }
    *n_out = n;
    return runc_set_ok(err);
}

int runc_generate(runc_state *s, runc_sampler *smp, const int *prompt, int n_prompt, int max_new,
                  int stop_token, int *out, float *out_logprobs, int *n_out, runc_error *err)
{
    if (n_out) *n_out = 0;
    if (!s || !smp || !prompt || !n_out || max_new < 0 || (!out && max_new > 0))
        return runc_set_error(err, RUNC_E_ARG, "runc_generate: NULL argument or negative max_new");
    if (smp->vocab_size != s->model->cfg.vocab_size)
        return runc_set_error(err, RUNC_E_ARG, "sampler vocab_size %d differs from the model's %d", smp->vocab_size,
                         s->model->cfg.vocab_size);
    return generate_loop(s, smp, prompt, n_prompt, max_new, stop_token, out, out_logprobs, n_out, err);
}

size_t runc_answer_cap(const runc_state *s, const runc_tokenizer *t)
{
    size_t cap;
    if (!s || !t) return 0;
    /* the answer's tokens are at most max_answer (and fewer than the context);
     * saturated where the product does not fit (32-bit hosts): a buffer too
     * large to allocate fails cleanly, a wrapped size would be too small */
    if (!mul_sz((size_t)(s->max_answer < s->context ? s->max_answer : s->context), (size_t)t->max_token_length, &cap) ||
        !add_sz(cap, 1, &cap))
        return SIZE_MAX;
    return cap;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

int runc_problem_encode(const runc_tokenizer *t, const char *prompt, int context, int *ids, int cap, int *n_ids,
                        runc_error *err)
{
    const size_t len = strlen(prompt);
    /* the most bytes the batch engine's scratch takes, whatever cap this
     * caller has (runc_impl.h): context * max_token_length, capped */
    const size_t mtl = (size_t)runc_tokenizer_max_token_length(t);
    size_t i, most = (size_t)RUNC_PROMPT_SCRATCH - 3;
    int rc;
    *n_ids = 0;
    if (context <= 0) most = 0;
    else if (mtl == 0 || (size_t)context <= most / mtl) most = (size_t)context * mtl;
    for (i = 0; i < len && is_space(prompt[i]); i++) {}
    if (i == len)
        return runc_set_error(err, RUNC_E_ARG, "empty prompt%s (a problem is like \"24 + 82 =\")",
                              len ? " (only whitespace)" : "");
    if (len > most || cap < 3 || len > (size_t)cap - 3)
        return runc_set_error(err, RUNC_E_CONTEXT, "prompt of %zu bytes does not fit in the context of %d positions",
                              len, context);
    rc = runc_encode(t, prompt, 1, 0, ids, cap, n_ids, err);
    if (rc == RUNC_OK && *n_ids >= context)
        rc = runc_set_error(err, RUNC_E_CONTEXT,
                            "prompt is %d tokens (with BOS); the context holds %d, leaving no room for an answer",
                            *n_ids, context);
    return rc;
}

int runc_problem_answer(const runc_tokenizer *t, const int *ids, int n_prompt, int n_gen, char *answer, size_t cap,
                        runc_error *err)
{
    size_t used = 0, start = 0, end;
    int rc = runc_decode(t, ids[n_prompt - 1], ids + n_prompt, n_gen, answer, cap, &used, err);
    if (rc != RUNC_OK) return rc;
    end = used;
    while (start < end && is_space(answer[start])) start++;
    while (end > start && is_space(answer[end - 1])) end--;
    memmove(answer, answer + start, end - start);
    answer[end - start] = '\0';
    return runc_set_ok(err);
}

size_t runc_final_answer(const char *answer)
{
    const char *mark = answer ? strrchr(answer, RUNC_STEPS_MARK) : NULL;
    return mark ? (size_t)(mark - answer) + 1 : 0;
}

int runc_solve(runc_state *s, const runc_tokenizer *t, const char *prompt, char *answer, size_t cap,
               int *n_generated, runc_error *err)
{
    size_t len, cap_ids, bytes;
    int *ids = NULL, n_ids = 0, n_gen = 0, rc, max_new;

    if (n_generated) *n_generated = 0;
    if (!s || !t || !prompt || !answer || cap == 0)
        return runc_set_error(err, RUNC_E_ARG, "runc_solve: NULL argument or empty answer buffer");
    answer[0] = '\0';
    if (t->vocab_size != s->model->cfg.vocab_size)
        return runc_set_error(err, RUNC_E_VOCAB, "tokenizer has %d tokens, the model %d", t->vocab_size,
                         s->model->cfg.vocab_size);
    if (t->vocab_size <= RUNC_TOKEN_EOS)
        return runc_set_error(err, RUNC_E_VOCAB, "vocabulary of %d tokens has no BOS and EOS", t->vocab_size);
    len = strlen(prompt);
    if (len > (size_t)INT_MAX - 8)
        return runc_set_error(err, RUNC_E_CONTEXT, "prompt of %zu bytes is too long", len);
    /* the prompt's tokens (at most len + 2), then the answer's (at most
     * max_answer): the buffer follows the answer cap, not the context */
    max_new = s->max_answer < s->context ? s->max_answer : s->context;
    if (!add_sz(len + 3, (size_t)max_new, &cap_ids) || !mul_sz(cap_ids, sizeof *ids, &bytes))
        return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    ids = (int *)malloc(bytes);
    if (!ids) return runc_set_error(err, RUNC_E_NOMEM, "out of memory");
    rc = runc_problem_encode(t, prompt, s->context, ids, (int)len + 3, &n_ids, err);
    /* the generated tokens go after the prompt in the same buffer */
    if (rc == RUNC_OK) {
        if (max_new > s->context - n_ids) max_new = s->context - n_ids;
        rc = generate_loop(s, NULL, ids, n_ids, max_new, RUNC_TOKEN_EOS, ids + n_ids, NULL, &n_gen, err);
    }
    if (rc == RUNC_OK) rc = runc_problem_answer(t, ids, n_ids, n_gen, answer, cap, err);
    free(ids);
    if (rc != RUNC_OK) return rc;
    if (n_generated) *n_generated = n_gen;
    return runc_set_ok(err);
}
