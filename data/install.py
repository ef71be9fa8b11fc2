#!/usr/bin/env python
"""Install and check the reference data files in the folder the loaders read.

    python data/install.py --check          verify every data file's sha256 (make check-data)
    python data/install.py SOURCE           copy in, from the folder SOURCE, every file that is
                                            missing or wrong here and right there (make data HASA_DATA=SOURCE)

The data folder is hasa_core.data_dir(): $HASA_DATA_DIR if set, else data/. The files and their
checksums are the benchmarks' (hasa_core.BENCHMARKS: ``files``, ``source``); nothing here knows
them by name. Exit status: 0 every file is right, 1 a file is missing or wrong (each named with
where to get it), 2 the data folder or SOURCE is not a folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hasa_core as H  # noqa: E402  (data folder, files and checksums: kept in one place)


def install_data(source: Path, dest: Path | None = None) -> dict[str, str]:
    """Copy into ``dest`` (default: the data folder) every reference file that is missing there
    or has the wrong sha256, from ``source`` (or ``source/<name>`` laid flat), when the source's
    copy has the right sha256; good files are left alone. Each copy goes to a temporary name
    first and is then renamed, so a half-copied file never has the final name. Returns
    file -> 'ok' | 'copied' | 'wrong sha256 in source' | 'not in source'."""
    dest = dest or H.data_dir()
    status = {}
    for rel, sha in H.data_files().items():
        target = dest / rel
        if target.is_file() and H.sha256_of(target) == sha:
            status[rel] = "ok"
            continue
        candidates = [source / rel, source / Path(rel).name]
        src = next((c for c in candidates if c.is_file()), None)
        if src is None:
            status[rel] = "not in source"
        elif H.sha256_of(src) != sha:
            status[rel] = "wrong sha256 in source"
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp-{target.name}")
            shutil.copyfile(src, tmp)
            if target.is_symlink():
                target.unlink()
            os.replace(tmp, target)
            status[rel] = "copied"
    return status


def check_data(root: Path | None = None) -> list[str]:
    """Every data file that is missing or has the wrong sha256, each as one message that says where
    to get it (:func:`hasa_core.verified_path`); empty when every file is right."""
    problems = []
    for benchmark in H.BENCHMARKS.values():
        for rel, sha in benchmark.files.items():
            try:
                H.verified_path(rel, sha, benchmark.source, root)
            except H.DataError as e:
                problems.append(str(e))
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, help="a folder holding the data files to copy in")
    ap.add_argument("--check", action="store_true", help="only verify the data folder's files")
    args = ap.parse_args(argv)
    try:
        root = H.data_dir()
    except H.DataError as e:
        print(f"data: {e}", file=sys.stderr)
        return 2
    if args.source is not None:
        if not args.source.is_dir():
            print(f"data: {args.source} is not a folder (it does not exist)", file=sys.stderr)
            return 2
        for rel, st in install_data(args.source, root).items():
            print(f"{st:24s} {rel}")
    problems = check_data(root)
    for p in problems:
        print(f"data check failed: {p}", file=sys.stderr)
    if not problems:
        print(f"all data files in {root} verified")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
