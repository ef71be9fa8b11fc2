# HASA artifact. `make reproduce` regenerates every table and figure; `make test` checks it.
# Both create the virtual environment on first use.
PY      := .venv/bin/python
PROFILE ?= paper
JOBS    ?= 2
HASA_DATA ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export PYTHONHASHSEED := 0

.PHONY: all venv data check-data reproduce test unit nbval bench clean-runs

all: test

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Put the data into data/: copy it from $(HASA_DATA) if given, else fetch the Medium CSV with the
# Kaggle CLI (needs ~/.kaggle/kaggle.json). Checksums are verified afterwards.
data: venv
	@mkdir -p data/digits
	@if [ -n "$(HASA_DATA)" ]; then \
	  cp -n "$(HASA_DATA)/medium_data.csv" data/ 2>/dev/null || true; \
	  cp -n "$(HASA_DATA)"/digits/*.npz data/digits/ 2>/dev/null || cp -n "$(HASA_DATA)"/*.npz data/digits/ 2>/dev/null || true; \
	elif [ ! -f data/medium_data.csv ]; then \
	  $(PY) -m pip install --quiet kaggle && .venv/bin/kaggle datasets download dorianlazar/medium-articles-dataset -p data --unzip; \
	fi
	$(PY) -m hasa_core check-data

check-data: venv
	$(PY) -m hasa_core check-data

# Every notebook, in order, through papermill with the chosen profile. Runs are cached in
# results/runs/, so an interrupted reproduce resumes where it stopped.
reproduce: venv
	@mkdir -p results/notebooks figures
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb ($(PROFILE))"; \
	  $(PY) -m papermill --cwd notebooks $$nb results/notebooks/$$(basename $$nb) \
	      -p profile $(PROFILE) -p n_jobs $(JOBS) --progress-bar || exit 1; \
	done
	@if [ "$(PROFILE)" = paper ]; then $(PY) -m hasa_core readme; fi

test: unit nbval

unit: venv
	$(PY) -m pytest -q tests

# Re-execute the committed notebooks (smoke profile) and compare their outputs.
nbval: venv
	$(PY) -m pytest -q --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

bench: venv
	$(PY) -m hasa_core bench

# Forget every cached run (needed after changing training code or a RunConfig default).
clean-runs:
	rm -rf results/runs
