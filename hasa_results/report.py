"""The pages: the README's generated blocks (``<!-- text: NAME -->``, filled by :data:`TEXTS`),
``results/REPORT.md`` made from the executed notebooks, and ``report --check``, which fails when
either is stale or holds a number typed by hand.

Imports: :mod:`hasa_core`, :mod:`hasa_records`, every :mod:`hasa_results` module.
"""
from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hasa_core import ENGINE_VERSION, REPO, lookup
from hasa_records import DEFAULT_RESULTS_DIR, write_text_atomic
from hasa_results.claims import claim_text, paper_text, setup_text, verdicts_text
from hasa_results.mechanism import mechanism_text
from hasa_results.scale import flower_scale_text, many_clients_text
from hasa_results.spec_curve import spec_curve_text

README = REPO / "README.md"


REPORT = "REPORT.md"  # in the results folder


def engine_text(_: Path) -> str:
    return f"Engine version {ENGINE_VERSION} (part of every cache key; `hasa_core.ENGINE_VERSION`)."


TEXTS: dict[str, Callable[[Path], str]] = {
    "verdicts": verdicts_text, "paper": paper_text, "setup": setup_text, "engine": engine_text,
    "many-clients": many_clients_text, "spec-curve": spec_curve_text, "mechanism": mechanism_text,
    "flower-scale": flower_scale_text,
    **{f"claim-{k}": functools.partial(claim_text, claim=k) for k in "1234"},
}
"""The README's generated sentences: ``<!-- text: NAME -->`` blocks, filled by ``TEXTS[NAME]``."""


_BLOCK = re.compile(r"(<!-- (?P<kind>table|text): (?P<name>[\w./-]+) -->\n).*?(<!-- end (?P=kind) -->)", re.S)


_NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?\s?(?:%|pp\b)|(?<![\w.])[-+−]?\d+\.\d+(?![\w.])")


def fill_blocks(text: str, results_dir: Path) -> tuple[str, list[str]]:
    """Replace every ``<!-- table: NAME -->…<!-- end table -->`` block with ``results/NAME.md`` and
    every ``<!-- text: NAME -->…<!-- end text -->`` block with ``TEXTS[NAME](results_dir)``."""
    filled = []

    def fill(m: re.Match) -> str:
        if m["kind"] == "table":
            body = (results_dir / f"{m['name']}.md").read_text(encoding="utf-8")
        else:
            body = lookup(TEXTS, m["name"], "generated text")(results_dir).rstrip("\n") + "\n"
        filled.append(f"{m['kind']}:{m['name']}")
        return m[1] + body + m[4]
    return _BLOCK.sub(fill, text), filled


_NOT_RESULTS = ("2606.07621", "95 % CI", "95% CI", "80 % power", "p < 0.05", "Python 3.11")
"""Numbers in prose that are no results: the arXiv id, the test levels, the Python version."""


def typed_numbers(text: str) -> list[str]:
    """Result-like numbers (decimals, percentages, pp) outside the generated blocks of a document
    and outside code spans: each is a number typed by hand (:data:`_NOT_RESULTS` excepted)."""
    outside = _BLOCK.sub("", text)
    for constant in _NOT_RESULTS:
        outside = outside.replace(constant, "")
    outside = re.sub(r"`[^`\n]*`", "", outside)  # code: commands, file names, settings
    return _NUMBER.findall(outside)


def _saved_tables(src: str) -> list[str]:
    """The names of the tables a code cell saves, in order: the second argument of each
    ``save_table(...)`` call (parsed, so ``df.set_index(["a", "b"])`` as the first is no trap)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and len(n.args) > 1
             and getattr(n.func, "attr", getattr(n.func, "id", None)) == "save_table"
             and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)]
    return [n.args[1].value for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset))]


def _notebook_parts(nb_path: Path) -> dict[str, Any]:
    """From an executed notebook: its title, each saved table with the markdown cell before it,
    and its generated conclusion (the last Markdown output)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    title, sections, conclusion, last_md = nb_path.stem, [], "", ""
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if src.startswith("# "):
                title = src.splitlines()[0][2:].strip()
                last_md = ""
            elif not src.startswith(">"):
                last_md = src
            continue
        tables = _saved_tables(src)
        if tables:
            sections.append((last_md, tables))
            last_md = ""
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md:
                conclusion = "".join(md)
    return {"title": title, "sections": sections, "conclusion": conclusion}


def report_text(results_dir: Path = DEFAULT_RESULTS_DIR) -> str:
    """``results/REPORT.md``: per executed notebook, its generated conclusion, then every table it
    wrote with the notebook's own explanation; then performance and the engine-1 archive."""
    out = ["# HASA artifact — the full report", "",
           "Generated by `python -m hasa_results report` from `results/` (the executed paper-profile "
           "notebooks in `results/notebooks/` and the tables they wrote); never edited by hand. The "
           "front page is the [README](../README.md).", "", engine_text(results_dir), ""]
    nbs = sorted((results_dir / "notebooks").glob("[0-9]*.ipynb"))
    out += ["## Contents", ""] + [f"* [{_notebook_parts(p)['title']}](#{_anchor(_notebook_parts(p)['title'])})"
                                  for p in nbs] + ["* [Performance](#performance)", ""]
    for p in nbs:
        parts = _notebook_parts(p)
        out += [f"## {parts['title']}", "", f"Executed notebook: [`notebooks/{p.name}`](notebooks/{p.name}).", ""]
        if parts["conclusion"]:
            out += [parts["conclusion"].strip(), ""]
        for md, tables in parts["sections"]:
            if md:
                out += [re.sub(r"^(#+) ", r"#\1## ", md.strip(), flags=re.M), ""]
            for name in tables:
                path = results_dir / f"{name}.md"
                if path.is_file():
                    out += [f"`results/{name}.md`:", "", path.read_text(encoding="utf-8").rstrip("\n"), ""]
    out += ["## Performance", ""]
    for name, what in [("bench", "`make bench` (steady-state training throughput against this machine's matmul)"),
                       ("bench_gpu", "the GPU check on a lent H200"), ("runtime", "run time per experiment")]:
        path = results_dir / f"{name}.md"
        if path.is_file():
            out += [f"`results/{name}.md` — {what}:", "", path.read_text(encoding="utf-8").rstrip("\n"), ""]
    archive = results_dir / "engine1" / "README.md"
    if archive.is_file():
        out += ["## Engine-1 archive", "", "The first tables (our level rule, engine version 1) are kept unchanged "
                "in [`engine1/`](engine1/README.md).", ""]
    return "\n".join(out)


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def write_report(results_dir: Path = DEFAULT_RESULTS_DIR, readme: Path = README) -> list[Path]:
    """Write ``results/REPORT.md`` and refill the README's generated blocks (both atomically)."""
    text, _ = fill_blocks(readme.read_text(encoding="utf-8"), results_dir)
    return [write_text_atomic(results_dir / REPORT, report_text(results_dir)), write_text_atomic(readme, text)]


def update_readme(readme: Path = README, results_dir: Path = DEFAULT_RESULTS_DIR) -> list[str]:
    """Refill the README's generated blocks; returns what was filled."""
    text, filled = fill_blocks(readme.read_text(encoding="utf-8"), results_dir)
    write_text_atomic(readme, text)
    return filled


def check_report(results_dir: Path = DEFAULT_RESULTS_DIR, readme: Path = README) -> list[str]:
    """Problems that make README or REPORT disagree with ``results/``: a stale generated block, a
    stale REPORT, a number typed by hand outside the generated blocks. Empty when all is well."""
    problems = []
    text = readme.read_text(encoding="utf-8")
    fresh, _ = fill_blocks(text, results_dir)
    if fresh != text:
        stale = [m["name"] for m, f in zip(_BLOCK.finditer(text), _BLOCK.finditer(fresh)) if m[0] != f[0]]
        problems.append(f"{readme.name}: generated blocks differ from results/: {', '.join(stale) or 'layout'}")
    report = results_dir / REPORT
    if not report.is_file() or report.read_text(encoding="utf-8") != report_text(results_dir):
        problems.append(f"{report} differs from what results/ produce")
    typed = typed_numbers(text)
    if typed:
        problems.append(f"{readme.name}: numbers typed by hand outside generated blocks: {typed}")
    return problems
