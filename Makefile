# Runstream — see README.md. `make run` starts the product, `make test` runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/runstream/v1/*.proto)
PROTO_OUT := client
DATA_DIR ?= ./.runstream

.PHONY: setup run test proto proto-check lint kafka-libs kafka-up kafka-down browser bench \
	bench-smoke fuzz faults clean

setup: $(STAMP)

$(STAMP): client/pyproject.toml services/pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -e ./client -e ./services
	touch $(STAMP)

run: setup
	$(BIN)/runstream server --data-dir $(DATA_DIR)

# Generated code is checked in; regenerate with the pinned grpcio-tools.
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  $(PROTO_SRC)

proto-check: setup
	rm -rf .cache/proto-check && mkdir -p .cache/proto-check
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=.cache/proto-check --pyi_out=.cache/proto-check --grpc_python_out=.cache/proto-check \
	  $(PROTO_SRC)
	diff -r -x __init__.py -x __pycache__ .cache/proto-check/runstream/v1 $(PROTO_OUT)/runstream/v1 \
	  || { echo "generated protos are stale: run 'make proto' and commit"; exit 1; }

lint: setup
	$(BIN)/ruff check .

kafka-libs:
	scripts/fetch-kafka.sh

kafka-up: setup kafka-libs
	$(BIN)/python scripts/kafka.py up

kafka-down: setup
	$(BIN)/python scripts/kafka.py down

# Debian's Chromium for the browser tests (tests/ui drive it with Playwright). Installed
# with apt-get only when /usr/bin/chromium is missing: as root, else through sudo.
CHROMIUM := /usr/bin/chromium
BROWSER_PKGS := chromium fonts-liberation fonts-dejavu-core

browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "make browser: $(CHROMIUM) is missing and installing it needs root:" \
	  "run 'apt-get install $(BROWSER_PKGS)' as root, or install sudo" >&2; exit 1; fi; \
	set -x; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	  $(BROWSER_PKGS) && \
	test -x $(CHROMIUM)

test: setup proto-check lint kafka-libs browser
	$(BIN)/python -m pytest tests

# Every scenario, full size: bench/results/*.json and bench/RESULTS.md.
bench: setup kafka-libs
	$(BIN)/python -m bench

# Every scenario at tiny sizes, one repetition; RESULTS.md untouched (tests/bench runs it).
bench-smoke: setup kafka-libs
	$(BIN)/python -m bench --smoke

# Coverage-guided fuzzing of decode → validate → records → fold (tests/fuzz/ingest_target.py);
# tests/fuzz/test_fuzz.py runs 20,000 inputs of it in `make test`. Crash inputs land in
# .cache/fuzz/ (crash-*); docs/reliability.md has the last full run.
FUZZ_RUNS ?= 1000000
fuzz: setup
	$(BIN)/python tests/fuzz/ingest_target.py --write-seeds .cache/fuzz/corpus
	set -o pipefail; cd .cache/fuzz && ../../$(BIN)/python ../../tests/fuzz/ingest_target.py \
	  -runs=$(FUZZ_RUNS) -print_final_stats=1 corpus 2>&1 | grep -v '^INFO: Instrumenting'

# The fault-injection suite at full size (tests/faults; `make test` runs it reduced); its
# figures go into docs/reliability.md.
faults: setup kafka-libs
	RUNSTREAM_FAULTS=full $(BIN)/python -m pytest -s -p no:cacheprovider tests/faults \
	  tests/e2e/test_rate_limits.py -o timeout=3600
	$(BIN)/python -m tests.faults.report

clean:
	rm -rf $(VENV) .cache .runstream
