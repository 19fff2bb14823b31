# Quick start: `make demo` and `make test`. Everything installs into .venv from the registries.
# `make quick`: the inner loop (no slow training on real data, no reliability layer);
# tests carry layer markers unit / cli / reliability / spec (tests/conftest.py): `make test M=unit`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test quick fuzz clean

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU build on local disk; the package then asks only for torch>=2.3.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[data,test,bench,distributed]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests $(if $(M),-m "$(M)")

quick: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow and not reliability" tests

fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_qnc.py --cases 100000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
