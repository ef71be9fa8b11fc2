# HASA artifact. `make reproduce` regenerates every table and figure; `make test` checks it.
# Both create the virtual environment on first use.
PY      := .venv/bin/python
PROFILE ?= paper
JOBS    ?= 2
HASA_DATA ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Executed notebooks: the paper profile's are committed in results/notebooks/; any other
# profile's go to the git-ignored results/<profile>/notebooks/.
NB_OUT  := $(if $(filter paper,$(PROFILE)),results/notebooks,results/$(PROFILE)/notebooks)
export PYTHONHASHSEED := 0

.PHONY: all venv data check-data precompute reproduce report test lint unit records report-check nbval bench clean-runs

all: test

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[flower]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Put the data into the folder the loaders read: $$HASA_DATA_DIR if set (it must exist), else
# data/. With HASA_DATA=/folder: every file there that is missing or has a wrong sha256 is replaced
# by the copy in /folder (or /folder/digits) when that copy's sha256 is right; good files are left
# alone. Without HASA_DATA: data/fetch_medium.py fetches the Medium CSV with $(MEDIUM_DOWNLOAD)
# (the Kaggle CLI, needs ~/.kaggle/kaggle.json) unless the file there is right already; the download
# replaces it only once its sha256 is verified. `python data/build_digits.py` rebuilds what it can
# of data/digits/. Checksums are verified afterwards.
MEDIUM_DOWNLOAD ?= $(PY) -m pip install --quiet kaggle && .venv/bin/kaggle datasets download dorianlazar/medium-articles-dataset --unzip -p {dir}
data: venv
	@if [ -n "$${HASA_DATA_DIR:-}" ] && [ ! -d "$$HASA_DATA_DIR" ]; then \
	  echo "make data: HASA_DATA_DIR=$$HASA_DATA_DIR is not a folder (it does not exist); create it, or unset HASA_DATA_DIR to use data/" >&2; exit 2; fi
	@if [ -n "$(HASA_DATA)" ]; then \
	  if [ ! -d "$(HASA_DATA)" ]; then echo "make data: HASA_DATA=$(HASA_DATA) is not a folder (it does not exist)" >&2; exit 2; fi; \
	  $(PY) -m hasa_core install-data "$(HASA_DATA)"; \
	else \
	  $(PY) data/fetch_medium.py --download '$(MEDIUM_DOWNLOAD)'; \
	fi
	$(PY) -m hasa_core check-data

check-data: venv
	$(PY) -m hasa_core check-data

# Every run that any notebook of the profile needs, in one pool of $(JOBS) processes (cached in
# results/runs/, so an interrupted run resumes where it stopped).
precompute: venv
	$(PY) -m hasa_results precompute --profile $(PROFILE) --jobs $(JOBS)
	@if [ "$(PROFILE)" = paper ]; then $(PY) -m hasa_core manifest; fi

# Every notebook, in order, through papermill with the chosen profile. Each executes into a
# temporary file that replaces the executed notebook only when the whole notebook succeeded.
reproduce: precompute
	@mkdir -p $(NB_OUT)
	@for nb in $(NOTEBOOKS); do \
	  out=$(NB_OUT)/$$(basename $$nb); \
	  echo "== $$nb ($(PROFILE)) -> $$out"; \
	  $(PY) -m papermill --cwd notebooks $$nb $$out.partial.ipynb \
	      -p profile $(PROFILE) -p n_jobs $(JOBS) --progress-bar || { echo "$$nb failed: its executed copy is $$out.partial.ipynb; $$out is unchanged"; exit 1; }; \
	  mv $$out.partial.ipynb $$out; \
	done
	@if [ "$(PROFILE)" = paper ]; then $(PY) -m hasa_results report; fi

# Write results/REPORT.md and refill the README's generated blocks from results/ (reproduce does it).
report: venv
	$(PY) -m hasa_results report

test: lint unit records report-check nbval

lint: venv
	$(PY) -m ruff check .

unit: venv
	$(PY) -m pytest -q tests

# Every committed record matches its digest and results/records.manifest; the cheapest record of
# this engine is re-run and must give the same parameters bit for bit.
records: venv
	$(PY) -m hasa_core manifest --check
	$(PY) -m hasa_core audit --sample 1 --cheapest

# Fails when README.md or results/REPORT.md differ from what results/ produce, or a number is typed by hand.
report-check: venv
	$(PY) -m hasa_results report --check

# Re-execute the committed notebooks (smoke profile) and compare their outputs.
nbval: venv
	$(PY) -m pytest -q --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

bench: venv
	$(PY) -m hasa_results bench

# Forget the cached runs that are not committed: the untracked and git-ignored files under
# results/runs/ and results/*/runs/ (records of other profiles, stale .tmp-*). Committed records,
# the engine-1 archive in results/engine1/runs/ among them (no current code recomputes it), are
# never removed. Never needed for correctness (records carry the engine version and are checked on
# read); it only frees disk space. Needs a git checkout: outside one, git refuses and nothing goes.
clean-runs:
	git rev-parse --git-dir >/dev/null && \
	  git ls-files -z --others -- ':(glob)results/runs/**' ':(glob)results/*/runs/**' | xargs -0r rm -f --
	find results -depth -type d -empty -path '*/runs/*' -delete
