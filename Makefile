# TinyMath. `make run` answers problems with the C runner; `make test` sets up .venv and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: help test venv clean model model-files

# Each stage's .mk file adds its own targets, and may add checks to TEST_TARGETS
# (run by `make test` before pytest).
TEST_TARGETS :=
.DEFAULT_GOAL := help
include runc/runc.mk
include runc/tests/tests.mk
include runc/tests/train.mk
include runc/fuzz/fuzz.mk
include runc/tests/tsan.mk
include runc/tests/cross.mk
include bench/bench.mk

help:
	@echo "make run           answer a few problems with the shipped model (C, no Python needed);"
	@echo "                   make run PROMPT=\"36 / 3 =\" answers one"
	@echo "make calc          an interactive calculator on the shipped model (C)"
	@echo "make test          create .venv, install everything, run the whole test suite"
	@echo ""
	@echo "make model         retrain the shipped model from models/default.toml (about 15 min, 1 core)"
	@echo "make model-files   export and evaluate runs/default into models/ (the second half of make model)"
	@echo "make bench         the C engine against PyTorch (and llama2.c's speed notes): problems/s"
	@echo "make bench-train   the trainers: PyTorch eager against the C training engine, tokens/s"
	@echo "make venv          only the .venv (torch CPU pinned, then this package, editable)"
	@echo "make c-test        the C runner's own tests, plain and under ASan+UBSan"
	@echo "make train-c-test  the C training engine's tests, plain, ASan+UBSan and TSan"
	@echo "make tsan-check    the batch engine's threads under ThreadSanitizer"
	@echo "make fuzz-check    a short libFuzzer run of the loaders, the encoder and the batch engine (make fuzz: long)"
	@echo "make cross-check   the C runner built for ARM (aarch64, armhf) and run under qemu"
	@echo "make run-native    runc/run-native: the runner built for this CPU only (-march=native)"
	@echo "make clean         remove the build folders and .venv"

# The virtual environment is rebuilt when the project's install files change. The editable
# install compiles the C engine into runc/; when its sources change, runc/build_engine.py
# rebuilds it (the one guard against a stale engine; tests/conftest.py runs it too).
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a bare `torch` requirement could pull a multi-gigabyte CUDA build
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[train,test,report,dmmath,serve]"
	touch $@

venv: $(VENV)/.installed
	@$(PY) runc/build_engine.py

test: venv $(TEST_TARGETS)
	$(PY) -m pytest tests

clean:
	rm -rf build dist *.egg-info $(VENV)

# The shipped default model, reproduced bit for bit from models/default.toml and its seed (the C
# training engine on one thread; about 15 minutes on one CPU core), then exported and evaluated.
model: venv
	$(VENV)/bin/tinymath train -c models/default.toml --force --no-progress
	$(MAKE) model-files

model-files: venv
	cp runs/default/tokenizer.bin models/tokenizer.bin
	cp runs/default/tokenizer.model models/tokenizer.model
	$(VENV)/bin/tinymath export runs/default/best.pt --format v1 --out models/tinymath.bin --tokenizer models/tokenizer.bin
	$(VENV)/bin/tinymath export runs/default/best.pt --format v2 --out models/tinymath.q8.bin --tokenizer models/tokenizer.bin
	$(VENV)/bin/tinymath eval models/tinymath.bin
	$(VENV)/bin/tinymath eval models/tinymath.q8.bin

# Training speed: this trainer against a plain PyTorch loop (tokens/s at three sizes, time to 99% on classic +).
.PHONY: bench-train
bench-train: venv
	$(PY) bench/bench_train.py
