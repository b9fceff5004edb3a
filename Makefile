# deepinfo: every target creates and fills .venv when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the offline copy of the real data, when it sits beside the repository (CI, developers)
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin DEEPINFO_DATA), undefined)
  ifneq ($(wildcard $(SHARED_DATA)),)
    export DEEPINFO_DATA := $(SHARED_DATA)
  endif
endif

.PHONY: venv test bench reproduce clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[all]'
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_estimators.py $(BENCH_ARGS)

reproduce: $(STAMP)
	@echo "make reproduce: the notebooks and the book are not in this tree yet (issue 4)." >&2
	@exit 2

clean-venv:
	rm -rf $(VENV)
