/*
 * runc.h - TinyMath's C99 inference library for llama2.c model files.
 *
 * Reads llama2.c's weight files (v0 legacy fp32, v1 fp32, v2 int8 Q8_0) and
 * tokenizer.bin, runs the Llama forward pass with a KV cache, samples, and
 * answers TinyMath problems ("24 + 82 =" -> "106.00").
 *
 * Objects, each with a paired open/close:
 *   runc_model      weights and config; read-only once open, so one model can
 *                   be shared by any number of threads and run states.
 *   runc_tokenizer  vocabulary; read-only once open (shareable too).
 *   runc_state      one sequence in flight: KV cache and activations.
 *   runc_sampler    temperature / top-p / seed; one per sequence.
 * Weights are kept apart from per-sequence state so that a batch engine (many
 * sequences, matrix-matrix work across them, worker threads) can be added on
 * the same model object without changing this API.
 *
 * Errors: every function that can fail returns a runc_status (RUNC_OK == 0)
 * and, when given a non-NULL runc_error*, fills it with the code and a one-line
 * message. The library keeps no global state, never prints and never exits.
 *
 * File formats (little-endian hosts only):
 *   v0   7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *        max_seq_len; vocab_size < 0 = untied classifier), then fp32 tensors.
 *   v1   uint32 magic 0x616b3432 "ak42", int32 version 1, the 7 int32, uint8
 *        shared_classifier, zero padding to 256 bytes; fp32 tensors.
 *   v2   as v1 with version 2 and int32 group_size at byte 37; norms fp32, all
 *        matrices Q8_0 (int8 values then one fp32 scale per group).
 *   TinyMath extension (v1, v2): bytes 240..243 "TMx1", float32 rope_theta at
 *        244, float32 norm_eps at 248. Absent (zeros): 10000 and 1e-5.
 */
#ifndef RUNC_H
#define RUNC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The region between the two markers is also read by runc/build_engine.py as
 * the cffi declarations, so it holds only plain C declarations: no macros. */
/* RUNC-CDEF-BEGIN */

/* ---- status codes ------------------------------------------------------- */
typedef enum runc_status {
    RUNC_OK = 0,
    RUNC_E_ARG = 1,          /* bad argument: NULL, token/position out of range, bad setting */
    RUNC_E_NOMEM = 2,        /* allocation failed */
    RUNC_E_IO = 3,           /* file cannot be opened or read */
    RUNC_E_EMPTY = 4,        /* file is empty */
    RUNC_E_TRUNCATED = 5,    /* file shorter than its header (or the header itself) implies */
    RUNC_E_TRAILING = 6,     /* file longer than its header implies */
    RUNC_E_MAGIC = 7,        /* neither the "ak42" magic nor a plausible v0 header */
    RUNC_E_VERSION = 8,      /* "ak42" file of a version other than 1 or 2 */
    RUNC_E_FIELD = 9,        /* a header field is zero, negative or above its cap */
    RUNC_E_SHAPE = 10,       /* heads do not divide dim / kv heads do not divide heads / odd head size */
    RUNC_E_GROUP = 11,       /* v2 group size not positive or not dividing dim and hidden_dim */
    RUNC_E_FLAG = 12,        /* shared_classifier flag neither 0 nor 1 */
    RUNC_E_EXTENSION = 13,   /* bad or unknown header extension (rope_theta, norm_eps) */
    RUNC_E_OVERFLOW = 14,    /* tensor sizes overflow the addressable size */
    RUNC_E_TOKENIZER = 15,   /* malformed tokenizer entry (negative/oversized length, empty or duplicate
                                piece, piece not valid UTF-8 or holding a NUL byte, NaN score) */
    RUNC_E_VOCAB = 16,       /* tokenizer does not match the model's vocabulary */
    RUNC_E_ENCODE = 17,      /* text holds a character the vocabulary cannot encode */
    RUNC_E_CONTEXT = 18,     /* prompt or position does not fit in the context */
    RUNC_E_BUFFER = 19,      /* caller's output buffer too small */
    RUNC_E_UNSUPPORTED = 20, /* e.g. a big-endian host */
    RUNC_E_WEIGHT = 21,      /* a weight is NaN or infinite, or a Q8_0 scale negative, NaN or infinite */
    RUNC_E_NONFINITE = 22    /* solving: the forward pass overflowed (finite weights too large for float32
                                gave a non-finite logit); the message names the layer */
} runc_status;

typedef struct runc_error {
    int code;              /* a runc_status */
    char message[256];     /* one line, no trailing newline */
} runc_error;

/* Sanity caps on header fields (far above any TinyMath or Llama-2 model). */
enum {
    RUNC_MAX_DIM = 65536,
    RUNC_MAX_HIDDEN_DIM = 1048576,
    RUNC_MAX_LAYERS = 4096,
    RUNC_MAX_HEADS = 4096,
    RUNC_MAX_VOCAB = 4194304,
    RUNC_MAX_SEQ_LEN = 1048576,
    RUNC_MAX_TOKEN_LENGTH = 65536,
    RUNC_MAX_TOKENIZER_BYTES = 1073741824  /* a tokenizer file: 1 GiB (and what its header and the vocabulary
                                              size allow: see runc_tokenizer_open) */
};

/* Token ids fixed by llama2.c / SentencePiece. */
enum { RUNC_TOKEN_UNK = 0, RUNC_TOKEN_BOS = 1, RUNC_TOKEN_EOS = 2 };

/* Flags for runc_model_open / runc_model_open_buffer. */
enum {
    RUNC_OPEN_NO_MMAP = 1,   /* open: read the file into memory instead of mapping it */
    RUNC_OPEN_COPY = 2,      /* open_buffer: copy the buffer (else the caller keeps it alive) */
    RUNC_OPEN_NO_WEIGHT_CHECK = 4 /* skip the scan of every weight (see runc_model_open) */
};

typedef struct runc_config {
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;          /* always positive here, whatever the v0 sign */
    int max_seq_len;
    int head_size;           /* dim / n_heads */
    int kv_dim;              /* n_kv_heads * head_size */
    int version;             /* 0, 1 or 2 */
    int shared_classifier;   /* 1: logits use the token embedding */
    int group_size;          /* Q8_0 group size (version 2), else 0 */
    int has_extension;       /* 1 when the TinyMath "TMx1" extension is present */
    float rope_theta;
    float norm_eps;
    size_t header_bytes;     /* 28 for v0, 256 for v1/v2 */
    size_t file_bytes;       /* exact file length the header implies */
} runc_config;

typedef struct runc_model runc_model;
typedef struct runc_tokenizer runc_tokenizer;
typedef struct runc_state runc_state;
typedef struct runc_sampler runc_sampler;

/* Name of a status code, e.g. "RUNC_E_MAGIC". Never NULL. */
const char *runc_status_name(int code);

/* ---- config and weights ------------------------------------------------- */

/* Validate a header against `size`, the total file length, without touching
 * a tensor: every field, the shapes, and the exact length the header implies
 * (overflow-checked). `data` needs only the header bytes (up to 256). */
int runc_parse_header(const void *data, size_t size, runc_config *config, runc_error *err);

/* Open a model file: mmap where available (unless RUNC_OPEN_NO_MMAP or built
 * with -DRUNC_NO_MMAP), else read into memory.
 * Weights: every fp32 value (norms, v0/v1 matrices, v2 scales) must be finite
 * and every Q8_0 scale >= 0 (a zero scale is an all-zero group, as the
 * exporters write it), else RUNC_E_WEIGHT naming the tensor. The scan reads
 * the whole file once; RUNC_OPEN_NO_WEIGHT_CHECK skips it, and then non-finite
 * weights give NaN or infinite logits (never a crash: the samplers still
 * return a token id in range). */
int runc_model_open(runc_model **model, const char *path, int flags, runc_error *err);

/* Open a model from memory. Without RUNC_OPEN_COPY the buffer must outlive the
 * model; any alignment is accepted (misaligned fp32 data is copied). */
int runc_model_open_buffer(runc_model **model, const void *data, size_t size, int flags,
                           runc_error *err);

void runc_model_close(runc_model *model);   /* NULL is fine */

const runc_config *runc_model_config(const runc_model *model);

/* ---- tokenizer ----------------------------------------------------------- */

/* tokenizer.bin: int32 max_token_length, then vocab_size x (float32 score,
 * int32 length, bytes). The vocabulary size comes from the model. A file is
 * read only up to the most such a vocabulary can take (4 + vocab_size x (8 +
 * max_token_length) bytes, at most RUNC_MAX_TOKENIZER_BYTES): a longer one
 * (/dev/zero, an endless pipe) is refused while reading, RUNC_E_VOCAB. Every piece
 * must be non-empty, at most max_token_length bytes, valid UTF-8 without a NUL
 * byte and unlike every other piece; scores must not be NaN (infinite ones are
 * allowed). */
int runc_tokenizer_open(runc_tokenizer **tok, const char *path, int vocab_size, runc_error *err);
int runc_tokenizer_open_buffer(runc_tokenizer **tok, const void *data, size_t size, int vocab_size,
                               runc_error *err);
void runc_tokenizer_close(runc_tokenizer *tok);

int runc_tokenizer_vocab_size(const runc_tokenizer *tok);
/* The length of the longest piece (at most the header's max_token_length, which
 * is only an upper bound). */
int runc_tokenizer_max_token_length(const runc_tokenizer *tok);

/* The raw piece of a token (not NUL-terminated in general; *len bytes), and
 * its score. NULL / 0 for an id out of range. */
const char *runc_token_piece(const runc_tokenizer *tok, int token, size_t *len);
float runc_token_score(const runc_tokenizer *tok, int token);

/* Encode UTF-8 text with llama2.c's algorithm: optional BOS, a dummy-prefix
 * space when the text is non-empty, one token per code point (byte-fallback
 * pieces <0xXX> when the code point is not a piece and the vocabulary has
 * them), then repeated merges of the best-scoring adjacent pair; optional EOS.
 * cap >= strlen(text) + 3 always suffices. */
int runc_encode(const runc_tokenizer *tok, const char *text, int bos, int eos,
                int *tokens, int cap, int *n_tokens, runc_error *err);

/* The text of `token` following `prev_token`: byte pieces <0xXX> become that
 * byte, and a leading space is dropped right after BOS (SentencePiece).
 * BOS and EOS decode to nothing. */
int runc_decode_piece(const runc_tokenizer *tok, int prev_token, int token,
                      const char **piece, size_t *len);

/* Decode a run of tokens into out (NUL-terminated). *out_len gets the length
 * (excluding the NUL), or the length needed when RUNC_E_BUFFER is returned.
 * cap >= n * max_token_length + 1 always suffices. */
int runc_decode(const runc_tokenizer *tok, int prev_token, const int *tokens, int n,
                char *out, size_t cap, size_t *out_len, runc_error *err);

/* ---- forward -------------------------------------------------------------- */

/* A run state for one sequence of up to `context` positions (0 = the model's
 * max_seq_len; larger is an error). The model must outlive the state. */
int runc_state_open(runc_state **state, const runc_model *model, int context, runc_error *err);
void runc_state_close(runc_state *state);
int runc_state_context(const runc_state *state);
long long runc_state_tokens(const runc_state *state); /* tokens run since open (runc_forward calls) */
const runc_model *runc_state_model(const runc_state *state);

/* Run `token` at position `pos` (0 <= pos < context), writing its keys and
 * values into the cache; positions 0..pos-1 must have been run before on this
 * state. When logits is non-NULL, *logits points at vocab_size floats owned
 * by the state, valid until the next call; NULL skips the classifier and the
 * last layer's work past its keys and values (a prompt token's: they feed
 * nothing else), so only the cache is filled. */
int runc_forward(runc_state *state, int token, int pos, const float **logits, runc_error *err);

/* Run n tokens at positions pos0 .. pos0+n-1; when out is non-NULL it gets
 * n x vocab_size logits (row-major), else only the cache is filled. */
int runc_forward_tokens(runc_state *state, const int *tokens, int n, int pos0, float *out,
                        runc_error *err);

/* ---- sampler -------------------------------------------------------------- */

/* temperature 0: greedy (the lowest id among equal maxima); else softmax of
 * logits/temperature, restricted to the top-p nucleus when 0 < topp < 1.
 * The same seed gives the same samples (xorshift64*; seed 0 is remapped). */
int runc_sampler_open(runc_sampler **sampler, int vocab_size, float temperature, float topp,
                      unsigned long long seed, runc_error *err);
void runc_sampler_close(runc_sampler *sampler);

/* Pick a token from vocab_size logits (not modified). When logprob is
 * non-NULL it gets the token's log-probability under the model (log-softmax
 * of the logits at temperature 1, whatever the sampling temperature). */
int runc_sample(runc_sampler *sampler, const float *logits, int *token, float *logprob);

/* ---- generation and the problem convention -------------------------------- */

/* Feed prompt[0..n_prompt) from position 0, then sample up to max_new tokens
 * into out (cap max_new), stopping before `stop_token` (-1: never) or at the
 * end of the context. Generated tokens use positions n_prompt.. so at most
 * context - n_prompt are produced; n_prompt must be in [1, context).
 * out_logprobs (may be NULL) gets each token's log-probability. Prompt
 * positions the state's cache already holds for the same tokens (what the
 * state ran last began the same way) are not run again: the same keys and
 * values, the same results. */
int runc_generate(runc_state *state, runc_sampler *sampler, const int *prompt, int n_prompt,
                  int max_new, int stop_token, int *out, float *out_logprobs, int *n_out,
                  runc_error *err);

/* The most tokens an answer may generate, by default: far above every real
 * task's longest answer (the classic task's longest, a steps answer of `*`
 * with operands up to 99, is 81 tokens), yet bounded where a model's context is
 * huge and it never writes EOS. */
enum { RUNC_DEFAULT_MAX_ANSWER = 512 };

/* The most tokens runc_solve generates on this state (1..RUNC_MAX_SEQ_LEN;
 * 0 = RUNC_DEFAULT_MAX_ANSWER, what a new state has). An answer that reaches
 * it ends there, as one that reaches the end of the context. */
int runc_state_set_max_answer(runc_state *state, int max_answer, runc_error *err);
int runc_state_max_answer(const runc_state *state);

/* A buffer size that always holds runc_solve's answer: min(max_answer,
 * context) x the longest piece + 1 (SIZE_MAX where that size does not fit in
 * a size_t, as on 32-bit hosts with absurd settings). */
size_t runc_answer_cap(const runc_state *state, const runc_tokenizer *tok);

/* The TinyMath problem convention: input [BOS] + encode(prompt) (with the
 * dummy prefix; an empty or all-whitespace prompt is refused, RUNC_E_ARG),
 * greedy decoding until EOS, the end of the context or max_answer tokens,
 * answer = decoded generated text without leading/trailing whitespace.
 * Every step's logits are checked: a non-finite one (weights that pass the
 * open's check but overflow float32 in the forward pass) stops with
 * RUNC_E_NONFINITE naming the first layer whose output is not finite. answer gets a
 * NUL-terminated string; cap = runc_answer_cap() always suffices. When
 * n_generated is non-NULL it gets the number of generated tokens (EOS not
 * counted). */
int runc_solve(runc_state *state, const runc_tokenizer *tok, const char *prompt,
               char *answer, size_t cap, int *n_generated, runc_error *err);

/* Answers that show their work (a steps format) write their steps, then the
 * mark '#' (RUNC_STEPS_MARK), then the final answer as a direct answer would
 * write it: "6*6=36 ... 3+1=4#4256.00". The mark never occurs in the steps. */
enum { RUNC_STEPS_MARK = 35 };   /* '#' */

/* The final answer of an answer: the offset in `answer` of the text after its
 * last '#', or 0 when it has none (a direct answer is its own final answer).
 * answer + runc_final_answer(answer) is the final answer; NULL gives 0. */
size_t runc_final_answer(const char *answer);

/* ---- the batch engine ----------------------------------------------------- */

/* Many problems at once: each of `threads` workers keeps `slots` sequences in
 * flight and advances all of them by one token per step (prompt or answer)
 * with matrix-matrix products, refilling a finished slot from the queue at
 * once. A new problem whose first tokens some slot of its worker has run
 * (its own previous problem, or another's: "24 + 81 =" and "24 + 93 =" share
 * seven, BOS and the dummy space included) copies their keys and values
 * instead of running them, and prompt tokens stop in the last layer once
 * their keys and values are stored. Greedy answers are identical to
 * runc_solve's (same arithmetic, bit for bit). Weights are packed once at open (fp32 rows aligned; int8 values
 * as exact floats), KV caches and activations live in one arena allocated at
 * open: solving allocates nothing. */
typedef struct runc_batch runc_batch;

enum {
    RUNC_BATCH_MAX_THREADS = 1024,
    RUNC_BATCH_MAX_SLOTS = 65536,
    RUNC_KERNELS_AUTO = 0,       /* the fastest kernels this CPU runs (AVX-512 VNNI, AVX2 on x86-64) */
    RUNC_KERNELS_PORTABLE = 1,   /* the portable C kernels (same results; for tests and comparisons) */
    RUNC_KERNELS_AVX2 = 2        /* at most AVX2 (same results; the portable ones where it is missing) */
};

typedef struct runc_batch_options {
    int threads;    /* worker threads: 0 = one per online CPU core, else 1..RUNC_BATCH_MAX_THREADS */
    int slots;      /* sequences in flight per thread: 0 = a default for the model's size */
    int context;    /* positions per sequence: 0 = the model's max_seq_len */
    int kernels;    /* RUNC_KERNELS_AUTO, _PORTABLE or _AVX2 */
} runc_batch_options;

/* A batch engine over a model and its tokenizer, which must outlive it (both
 * are only read: other states and engines may share them). opt NULL = all
 * defaults. The calling thread is worker 0; the others are started for each
 * runc_batch_solve call and joined before it returns. */
int runc_batch_open(runc_batch **batch, const runc_model *model, const runc_tokenizer *tok,
                    const runc_batch_options *opt, runc_error *err);
void runc_batch_close(runc_batch *batch);   /* NULL is fine */

int runc_batch_threads(const runc_batch *batch);
int runc_batch_slots(const runc_batch *batch);      /* per thread */
int runc_batch_context(const runc_batch *batch);
size_t runc_batch_bytes(const runc_batch *batch);   /* packed weights + arena */
const char *runc_batch_kernels(const runc_batch *batch);   /* e.g. "avx2", "portable C" */
long long runc_batch_tokens(const runc_batch *batch); /* tokens run by the last solve (prompt + answer,
                                                        * less the prompt positions taken from a cache) */

/* The most tokens an answer may generate (as runc_state_set_max_answer:
 * 0 = RUNC_DEFAULT_MAX_ANSWER, what a new engine has). */
int runc_batch_set_max_answer(runc_batch *batch, int max_answer, runc_error *err);
int runc_batch_max_answer(const runc_batch *batch);

/* A per-answer buffer size that always suffices (as runc_answer_cap). */
size_t runc_batch_answer_cap(const runc_batch *batch);

/* Solve prompts[0..n) with runc_solve's convention (greedy until EOS, the
 * end of the context or max_answer tokens; the answer stripped of
 * surrounding whitespace). Answer
 * i is a NUL-terminated string at answers + i * answer_cap. Optional outputs,
 * NULL or n entries each: n_generated (tokens generated, EOS not counted),
 * mean_logprob and min_logprob: the mean and the minimum log-probability of
 * the generated tokens and of the closing EOS (absent when the answer ran to
 * the end of the context or to max_answer) -- the model's confidence in its answer; and
 * prompt_errors: each prompt's status as data, prompt_errors[i].code its
 * runc_status (RUNC_OK when answered) and .message why it failed ("" when
 * answered), written for every prompt once the arguments are accepted.
 * A prompt that cannot be encoded or leaves no room for an answer fails the
 * call: the other answers are still computed (that one's is ""), and the
 * call returns the status of the lowest failing index, which err names
 * ("prompt 7: ..."). One call at a time per engine. */
int runc_batch_solve(runc_batch *batch, const char *const *prompts, int n, char *answers,
                     size_t answer_cap, int *n_generated, float *mean_logprob, float *min_logprob,
                     runc_error *prompt_errors, runc_error *err);

/* RUNC-CDEF-END */

#ifdef __cplusplus
}
#endif

#endif /* RUNC_H */
