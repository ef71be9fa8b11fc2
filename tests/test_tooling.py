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
