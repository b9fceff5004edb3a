# deepinfo: every target creates and fills .venv when it is missing or stale.
#
#   make reproduce [PROFILE=smoke|cpu|paper] [JOBS=4] [SET="estimator.batch_size=64 ..."] [PARAMS="n_images=4 ..."] [ONLY="02 05"] [FORCE=1]
#   make plan [PROFILE=...] [SET=...]      every job, download, disk and time, before running anything
#   make publish PROFILE=... [PUSH=1]      the built book onto the gh-pages branch (ghp-import)
#   make data [PROFILE=...] [DOWNLOAD=1]   list, verify (and fetch) the data a profile reads
#   make book [PROFILE=...]     rebuild the book from what has run
#   make test                   unit tests, the smoke run + book, nbval, the book in Chromium
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= smoke
PARAMS ?=
SET ?=
JOBS ?= 1
CPUS ?= $(shell nproc 2>/dev/null || echo 1)
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | wc -l)
ONLY ?=
FORCE ?=
# the offline copy of the real data, when it sits beside the repository (CI, developers)
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin DEEPINFO_DATA), undefined)
  ifneq ($(wildcard $(SHARED_DATA)),)
    export DEEPINFO_DATA := $(SHARED_DATA)
  endif
endif
# the browser test runs the system's Chromium through chromedriver (Debian packages)
CHROMIUM_PKGS := chromium chromium-driver

.PHONY: venv test unit-test bench reproduce plan publish data book browser clean-book clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[all]'
	@touch $@

venv: $(STAMP)

# Unit tests first (fast failure), then every notebook in the smoke profile and the book built
# from that run, then nbval (which re-executes the notebooks with their default, smoke,
# parameters; the trained networks now come from the cache) and the built book in Chromium.
test: $(STAMP) browser
	$(PY) -m pytest tests --ignore=tests/test_book_browser.py
	$(MAKE) --no-print-directory reproduce PROFILE=smoke JOBS=2
	$(PY) -m pytest --nbval-lax --nbval-current-env notebooks tests/test_book_browser.py

unit-test: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/test_book_browser.py

bench: $(STAMP)
	$(PY) benchmarks/bench_estimators.py $(BENCH_ARGS)

# the workflow (workflow/Snakefile): one job per notebook, JOBS at a time (one GPU each where the
# profile needs one), then the scoreboard and the book; reruns only what changed (FORCE=1: all)
reproduce: $(STAMP)
	$(VENV)/bin/snakemake -s workflow/Snakefile --cores $(CPUS) --resources gpu=$(GPUS) slots=$(JOBS) \
		--rerun-incomplete --config profile=$(PROFILE) jobs=$(JOBS) $(if $(strip $(SET)),set="$(SET)") $(if $(strip $(ONLY)),only="$(ONLY)") \
		$(if $(strip $(PARAMS)),params="$(PARAMS)") $(if $(strip $(FORCE)),--forceall)

plan: $(STAMP)
	$(PY) -m deepinfo.book.plan --profile $(PROFILE) $(addprefix --set ,$(SET))

publish: $(STAMP)
	$(PY) -m deepinfo.book.publish --profile $(PROFILE) $(if $(strip $(ALLOW_SMOKE)),--allow-smoke) \
		$(if $(strip $(ALLOW_INCOMPLETE)),--allow-incomplete) $(if $(strip $(PUSH)),--push)

data: $(STAMP)
	$(PY) -m deepinfo.toolkit.data --profile $(PROFILE) $(if $(strip $(DOWNLOAD)),--download)

book: $(STAMP)
	$(PY) -m deepinfo.book.reproduce --profile $(PROFILE) --book-only

# Chromium for the browser test: installed when missing and running as root (CI); otherwise the
# test skips, saying why (and fails under CI).
browser:
	@if command -v chromium >/dev/null 2>&1 && test -x /usr/bin/chromedriver; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(CHROMIUM_PKGS) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(CHROMIUM_PKGS) >/dev/null; \
	else \
		echo "note: chromium/chromedriver missing (apt-get install $(CHROMIUM_PKGS)): the browser test will skip" >&2; \
	fi

clean-book:
	rm -rf book/_build book/_generated book/_toc.yml

clean-venv:
	rm -rf $(VENV)
