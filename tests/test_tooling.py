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
