/*
 * train.h - TinyMath's C99 training engine: the model of train/model.py
 * (token embedding, RMSNorm, RoPE in llama2.c's interleaved convention,
 * grouped-query causal attention, SwiGLU, tied or untied classifier), its
 * backward pass, answer-only cross-entropy, global-norm gradient clipping and
 * AdamW, as train/train.py and train/optim.py define them.
 *
 * One object, with a paired open/close:
 *   runc_trainer   parameters, gradients, AdamW moments and every activation
 *                  of the largest batch it was opened for, in one arena.
 *
 * A step: runc_train_step(tokens, targets, batch, width, lr) = forward,
 * backward (runc_train_forward_backward), then clipping and AdamW
 * (runc_train_update). tokens and targets are int32 batch x width, row-major,
 * as train/data.py's Batches gives them: targets are RUNC_TRAIN_IGNORE (-100)
 * except on answer tokens, and the loss is the mean cross-entropy over the
 * batch's answer tokens.
 *
 * Parameters live in one float buffer (runc_train_buffer) in the order of
 * torch's named_parameters() for train/model.py's Transformer; runc_train_tensor
 * names each tensor with its state_dict name (a tied classifier is
 * tok_embeddings, listed once).
 *
 * Errors as in runc.h: a runc_status and, given a non-NULL runc_error*, a
 * one-line message naming the bad field. No globals, no printing, no exit.
 */
#ifndef RUNC_TRAIN_H
#define RUNC_TRAIN_H

#include "runc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The region between the two markers is also read by runc/build_train.py as
 * cffi declarations: plain C declarations only, no macros. */
/* RUNC-TRAIN-CDEF-BEGIN */

enum { RUNC_TRAIN_IGNORE = -100 };  /* target of a position that carries no loss */

/* Which float buffer runc_train_buffer returns (each runc_train_n_params floats). */
enum {
    RUNC_TRAIN_PARAMS = 0,
    RUNC_TRAIN_GRADS = 1,      /* of the last forward_backward (clipped after update) */
    RUNC_TRAIN_ADAM_M = 2,     /* AdamW's first moment (torch: exp_avg) */
    RUNC_TRAIN_ADAM_V = 3      /* AdamW's second moment (torch: exp_avg_sq) */
};

typedef struct runc_train_config {
    /* the model (train/model.py's ModelConfig) */
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;
    int max_seq_len;
    int tied;                /* 1: the classifier is the token embedding */
    float norm_eps;
    float rope_theta;
    /* the arena */
    int max_batch;           /* rows per batch the arena holds (width up to max_seq_len) */
    int threads;             /* worker threads splitting the batch rows (>= 1) */
    /* the optimizer (train/config.py's TrainConfig) */
    double beta1;
    double beta2;
    double adam_eps;
    double weight_decay;     /* on matrices only, not norms or the embedding */
    double grad_clip;        /* max global gradient norm; 0: no clipping */
    /* the compute */
    int kernels;             /* RUNC_KERNELS_AUTO (runc.h): the fastest this CPU runs (x86-64: AVX-512
                                product tiles, else AVX2+FMA); _AVX2: at most AVX2 (the same results);
                                _PORTABLE: plain C, no fused multiply-adds (within float rounding) */
} runc_train_config;

typedef struct runc_train_stats {
    double loss_sum;         /* summed cross-entropy of the answer tokens */
    int n_answer;            /* answer tokens (targets other than RUNC_TRAIN_IGNORE) */
    int n_computed;          /* positions computed (rows stop at their last answer token) */
    double grad_norm;        /* global gradient norm before clipping (runc_train_update) */
} runc_train_stats;

typedef struct runc_trainer runc_trainer;

/* Fill *c with train/model.py's and train/config.py's defaults (dim 64, ...,
 * max_batch 128, threads 1, AdamW 0.9 / 0.99 / 1e-8, decay 0.1, clip 1.0). */
void runc_train_config_default(runc_train_config *c);

/* Check the config, allocate the arena, set parameters to zero (the caller
 * writes the initial weights into RUNC_TRAIN_PARAMS). */
int runc_train_open(runc_trainer **trainer, const runc_train_config *config, runc_error *err);
void runc_train_close(runc_trainer *trainer);

long long runc_train_n_params(const runc_trainer *trainer);
const char *runc_train_kernels(const runc_trainer *trainer);  /* "avx512", "avx2" or "portable C" */
long long runc_train_arena_bytes(const runc_trainer *trainer);
int runc_train_n_tensors(const runc_trainer *trainer);
/* Tensor `index` (0 .. n_tensors-1): its state_dict name (NUL-terminated, cut
 * to name_cap), its first float in the buffers, its shape rows x cols (a norm
 * weight is dim x 1) and whether AdamW decays it (1: a matrix other than the
 * embedding). Any output pointer may be NULL. */
int runc_train_tensor(const runc_trainer *trainer, int index, char *name, int name_cap, long long *offset,
                      int *rows, int *cols, int *decay, runc_error *err);
float *runc_train_buffer(runc_trainer *trainer, int which);
/* AdamW's step count (torch: state "steps"); set it when loading a checkpoint. */
long long runc_train_adam_steps(const runc_trainer *trainer);
void runc_train_set_adam_steps(runc_trainer *trainer, long long steps);

/* Loss and gradients of one batch (gradients overwritten, not accumulated).
 * logits: NULL, or room for logits_cap floats that receive the classifier's
 * output at every answer position, in row-major (row, position) order,
 * n_answer x vocab_size. */
int runc_train_forward_backward(runc_trainer *trainer, const int *tokens, const int *targets, int batch, int width,
                                float *logits, long long logits_cap, runc_train_stats *stats, runc_error *err);
/* Clip the gradients to grad_clip (global norm) and take one AdamW step with
 * learning rate lr. Refuses (RUNC_E_WEIGHT) and changes nothing when the
 * gradient norm is NaN or infinite. */
int runc_train_update(runc_trainer *trainer, double lr, runc_train_stats *stats, runc_error *err);
/* forward_backward, then update; nothing is updated when the loss is not finite. */
int runc_train_step(runc_trainer *trainer, const int *tokens, const int *targets, int batch, int width, double lr,
                    runc_train_stats *stats, runc_error *err);

/* RUNC-TRAIN-CDEF-END */

#ifdef __cplusplus
}
#endif

#endif /* RUNC_TRAIN_H */
