# bench/bench.mk - benchmarks (included by the top-level Makefile).
#
#   make bench        the C engine (batch fp32 and int8, one at a time) against PyTorch (KV cache and
#                     none) on ~10K, ~100K and ~1M-parameter models, with the numpy matmul ceiling:
#                     one table, about 3-5 minutes (bench/bench_engines.py; BENCH_ARGS passes options,
#                     e.g. BENCH_ARGS="--sizes 100K --repeats 5"); and a steps row: a 25K model generating
#                     70 tokens per answer (answers that show their work), batch engine and one at a time

BENCH_ARGS ?=

.PHONY: bench

bench/bench_runc: bench/bench_runc.c $(RUNC_LIB) $(RUNC_BATCH)
	$(RUNC_CC) $(RUNC_CFLAGS) -Irunc -o $@ bench/bench_runc.c runc/runc.c runc/batch.c -lm $(RUNC_THREADS)

bench: venv bench/bench_runc
	$(PY) bench/bench_engines.py $(BENCH_ARGS)
