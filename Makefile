# Two commands on a fresh machine: `make demo` and `make test` (`make test-all` adds the slow tests). Both create .venv and install
# through constraints.txt, which pins the CPU build of torch (an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/compress run

# The fast suite: everything but the tests marked slow (the real MiniLM, digits training), one
# pytest-xdist worker per CPU; a test file stays on one worker (torchrun's tests share a port).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile

# Everything, slow tests included (CI runs `make test`, then the slow tests); the slow tests need
# the `inc` extra (Intel Neural Compressor, for ptq --engine inc).
test-all: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,inc]'
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
