#!/usr/bin/env python
"""Fetch the Medium CSV into the folder the loaders read (hasa_core.data_dir(): $HASA_DATA_DIR if
set, else data/), unless it already has the right sha256: ``data/install.py --fetch medium``.

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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import install  # noqa: E402  (the one fetch of every benchmark's files: data/install.py)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--download", required=True, metavar="COMMAND",
                    help="shell command that puts medium_data.csv into the folder {dir}")
    args = ap.parse_args(argv)
    try:
        folder = install.H.data_dir()
    except install.H.DataError as e:
        print(f"fetch_medium: {e}", file=sys.stderr)
        return 2
    return install.fetch("medium", args.download, folder, "fetch_medium")


if __name__ == "__main__":
    sys.exit(main())
