"""Where the study's outputs go: the profile's folders, tables (CSV + Markdown) and figures
(PNG + PDF), each written atomically; under ``make reproduce`` staged per notebook and published
only when the whole notebook succeeded.

A notebook's outputs appear together, and only when the whole notebook succeeded. ``make reproduce``
runs each notebook with HASA_STAGE naming a fresh staging folder: save_table and save_figure then
write there (at the same path relative to the repository, see ``staged``), readers of a table look
there first (``current``), and only after the notebook succeeded does ``publish`` move every staged
file into place. A notebook that fails half-way leaves results/ and figures/ as they were.
Without HASA_STAGE (nbval, a notebook opened in Jupyter) outputs are written in place.

Imports: :mod:`hasa_core`, :mod:`hasa_records`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import PROFILES, REPO, lookup
from hasa_records import DEFAULT_RESULTS_DIR, write_text_atomic


def output_dirs(profile: str) -> tuple[Path, Path]:
    """(results_dir, figures_dir) for a profile.

    ``paper`` writes into the repository's committed ``results/`` and ``figures/``. Any other
    profile (the fast ``smoke`` one that nbval re-executes) writes into the git-ignored
    ``results/<profile>/`` and ``results/<profile>/figures/``, so it never overwrites the
    committed paper-profile outputs and leaves no temporary folders behind."""
    lookup(PROFILES, profile, "profile")
    if profile == "paper":
        return DEFAULT_RESULTS_DIR, REPO / "figures"
    root = DEFAULT_RESULTS_DIR / profile
    return root, root / "figures"


SD_SUFFIX = " sd"
"""A numeric column ``X`` with a companion ``X sd`` is shown in Markdown as ``X ± sd``; the CSV keeps both."""


def cell(x: Any, column: str = "") -> str:
    """One table cell in the house number style: no ``nan`` (an empty cell is ``—``), no
    e-notation, three significant figures (whole numbers from 100 on); in a p-value column (its
    name is ``p`` or starts with ``p_`` or ``p ``) values below 0.001 are ``< 0.001``, elsewhere
    values that round to zero at three decimals are ``0``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (float, np.floating)):
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) < 0.0005:
        is_p = column == "p" or column.startswith(("p_", "p "))
        return "< 0.001" if is_p and x > 0 else "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _with_sd(flat: pd.DataFrame) -> pd.DataFrame:
    """Columns ``X`` and ``X sd`` (numeric) merged into one column ``X`` of ``mean ± sd`` strings,
    two decimals each."""
    out = flat.copy()
    for c in [c for c in flat.columns if isinstance(c, str) and f"{c}{SD_SUFFIX}" in flat.columns]:
        out[c] = [f"{m:.2f} ± {s:.2f}" if not (math.isnan(m) or math.isnan(s)) else cell(m)
                  for m, s in zip(flat[c], flat[f"{c}{SD_SUFFIX}"])]
        out = out.drop(columns=f"{c}{SD_SUFFIX}")
    return out


def table_markdown(df: pd.DataFrame) -> str:
    """A table as flat Markdown in the house number style (:func:`cell`; ``X`` and ``X sd`` as
    ``X ± sd``); a multi-index becomes columns, multi-level columns are joined."""
    keep_index = not isinstance(df.index, pd.MultiIndex)
    flat = df if keep_index else df.reset_index()
    if isinstance(flat.columns, pd.MultiIndex):
        flat = flat.set_axis([" · ".join(map(str, c)) for c in flat.columns], axis=1)
    flat = _with_sd(flat)
    shown = pd.DataFrame({c: [cell(x, str(c)) for x in flat[c]] for c in flat.columns}, index=flat.index)
    if keep_index:
        shown.index = [cell(x) for x in flat.index]
        shown.index.name = flat.index.name
    numeric = [i for i, c in enumerate(flat.columns) if pd.api.types.is_numeric_dtype(flat[c])]
    align = ["right" if i in numeric else "left" for i in range(len(flat.columns))]
    return shown.to_markdown(index=keep_index, colalign=(["left"] if keep_index else []) + align,
                             disable_numparse=True) + "\n"


STAGE_ENV = "HASA_STAGE"


def staged(path: Path) -> Path:
    """Where an output meant for ``path`` is written: ``path`` itself, or, while ``$HASA_STAGE``
    names a staging folder (relative: to the repository), the same place inside that folder."""
    stage = os.environ.get(STAGE_ENV)
    if not stage:
        return Path(path)
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(REPO):
        raise ValueError(f"{STAGE_ENV} is set, but {path} is outside the repository {REPO}: it cannot be staged")
    return REPO / stage / absolute.relative_to(REPO)


def current(path: Path) -> Path:
    """The copy of ``path`` a reader should see: the staged one if the running notebook wrote it,
    else ``path`` itself."""
    copy = staged(path)
    return copy if copy.exists() else Path(path)


def publish(stage: Path, root: Path | None = None) -> list[Path]:
    """Move every file of a staging folder to the same place under the repository (``root``), each
    by a rename (a reader sees the old file or the new one, never half of one), then remove the
    folder. Returns the files published (none when the notebook saved nothing, so made no folder).
    Refuses any folder not named ``.stage-*``: a mistyped argument cannot move or remove anything else.

    All or nothing: every target is checked first (a folder where a file belongs, or a file where
    a folder belongs, is refused with a ValueError naming each, before anything moves); should a
    rename still fail part-way (a full disk, a permission), the files already moved are put back as
    they were (a replaced file from its hard-linked backup, a new one removed), the staging folder
    is left as it was, and the error is raised."""
    stage, root = Path(stage), root or REPO
    if not stage.name.startswith(".stage-"):
        raise ValueError(f"{stage} is not a staging folder (a folder named .stage-*)")
    if not stage.exists():
        return []
    moves = [(f, root / f.relative_to(stage))
             for f in sorted(p for p in stage.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))]
    blocked = [f"{target} is a folder" for _, target in moves if target.is_dir()]
    blocked += sorted({f"{parent} is not a folder" for _, target in moves for parent in target.parents
                       if parent.is_relative_to(root) and parent.exists() and not parent.is_dir()})
    if blocked:
        raise ValueError(f"cannot publish {stage}: {'; '.join(blocked)}; remove or rename what is in the way and "
                         "run again (nothing was published)")
    done: list[tuple[Path, Path, Path | None]] = []  # (staged file, target, backup of the old target)
    try:
        for f, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if target.exists():
                backup = target.with_name(f".tmp-publish-{os.getpid()}-{target.name}")
                backup.unlink(missing_ok=True)
                try:
                    os.link(target, backup)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, backup)
            done.append((f, target, backup))
            os.replace(f, target)
    except BaseException:
        for f, target, backup in reversed(done):
            if f.exists():  # this one had not moved yet
                if backup is not None:
                    backup.unlink(missing_ok=True)
                continue
            os.replace(target, f)
            if backup is not None:
                os.replace(backup, target)
        raise
    for _, _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    shutil.rmtree(stage)
    return [target for _, target in moves]


def save_table(df: pd.DataFrame, name: str, results_dir: Path | None = None) -> Path:
    """Write a table as CSV (and Markdown beside it) into ``results/`` (or its staging folder,
    see :func:`staged`), each file atomically. Returns the CSV's path."""
    root = staged(results_dir or DEFAULT_RESULTS_DIR)
    path = write_text_atomic(root / f"{name}.csv", df.to_csv())
    write_text_atomic(root / f"{name}.md", table_markdown(df))
    return path


def save_figure(fig, name: str, figures_dir: Path | None = None) -> None:
    """Save a matplotlib figure as PNG and PDF into ``figures/`` (or its staging folder, see
    :func:`staged`; no timestamps, so the same figure gives the same bytes), each through a
    temporary file and a rename."""
    root = staged(figures_dir or REPO / "figures")
    root.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".tmp-{name}-", suffix=f".{ext}")
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=150, bbox_inches="tight",
                        metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
            os.replace(tmp, root / f"{name}.{ext}")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
