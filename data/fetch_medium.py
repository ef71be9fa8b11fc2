#!/usr/bin/env python
"""Fetch the Medium CSV into the folder the loaders read (hasa_core.data_dir(): $HASA_DATA_DIR if
set, else data/), unless it already has the right sha256. `make data` runs it.

    .venv/bin/python data/fetch_medium.py --download \
        'kaggle datasets download dorianlazar/medium-articles-dataset --unzip -p {dir}'

The download command (run by the shell, {dir} replaced by a fresh temporary folder inside the data
folder) must leave medium_data.csv in {dir}. Only when that file's sha256 is
hasa_core.MEDIUM_SHA256 is it renamed onto the data folder's medium_data.csv: a file already there
is never removed or overwritten by a failed or wrong download. Exit status: 0 the file is right,
1 the download failed or gave the wrong file, 2 $HASA_DATA_DIR is not a folder.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hasa_core as H  # noqa: E402  (data folder, file name and checksum: kept in one place)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--download", required=True, metavar="COMMAND",
                    help="shell command that puts medium_data.csv into the folder {dir}")
    args = ap.parse_args(argv)
    try:
        folder = H.data_dir()
    except H.DataError as e:
        print(f"fetch_medium: {e}", file=sys.stderr)
        return 2
    target = folder / H.MEDIUM_FILE
    if target.is_file() and H.sha256_of(target) == H.MEDIUM_SHA256:
        print(f"{target} has the right sha256: left alone")
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-medium-", dir=folder) as tmp:
            cmd = args.download.replace("{dir}", shlex.quote(tmp))
            print(f"fetching {H.MEDIUM_FILE} into {tmp}: {cmd}", flush=True)
            got = Path(tmp) / H.MEDIUM_FILE
            if subprocess.run(cmd, shell=True).returncode != 0 or not got.is_file():
                print(f"fetch_medium: the download did not give {H.MEDIUM_FILE}; {target} left as it was",
                      file=sys.stderr)
                return 1
            digest = H.sha256_of(got)
            if digest != H.MEDIUM_SHA256:
                print(f"fetch_medium: the download has sha256 {digest}, expected {H.MEDIUM_SHA256}; "
                      f"{target} left as it was", file=sys.stderr)
                return 1
            os.replace(got, target)  # a symlink at target is replaced, never written through
    except OSError as e:
        print(f"fetch_medium: cannot fetch into {folder}: {e}", file=sys.stderr)
        return 1
    print(f"{target}: fetched, sha256 verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
