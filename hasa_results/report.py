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

import pandas as pd

from hasa_core import ENGINE_VERSION, REPO, lookup
from hasa_records import DEFAULT_RESULTS_DIR, write_text_atomic
from hasa_results.claims import claim_text, paper_text, setup_text
from hasa_results.experiments import all_runs_frame
from hasa_results.front import lede_text, running_time_text, verdicts_text
from hasa_results.mechanism import mechanism_text
from hasa_results.outputs import table_markdown
from hasa_results.scale import flower_scale_text, many_clients_text
from hasa_results.shakespeare import cross_benchmark_text
from hasa_results.spec_curve import spec_curve_text

README = REPO / "README.md"


REPORT = "REPORT.md"  # in the results folder


def engine_text(_: Path) -> str:
    return f"Engine version {ENGINE_VERSION} (part of every cache key; `hasa_core.ENGINE_VERSION`)."


TEXTS: dict[str, Callable[[Path], str]] = {
    "lede": lede_text, "running-time": running_time_text, "verdicts": verdicts_text, "paper": paper_text,
    "setup": setup_text, "engine": engine_text,
    "many-clients": many_clients_text, "spec-curve": spec_curve_text, "mechanism": mechanism_text,
    "flower-scale": flower_scale_text, "cross-benchmark": cross_benchmark_text,
    **{f"claim-{k}": functools.partial(claim_text, claim=k) for k in "1234"},
}
"""The README's generated sentences: ``<!-- text: NAME -->`` blocks, filled by ``TEXTS[NAME]``."""


_BLOCK = re.compile(r"(<!-- (?P<kind>table|text): (?P<name>[\w./-]+) -->\n).*?(<!-- end (?P=kind) -->)", re.S)


_NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?\s?(?:%|pp\b)|(?<![\w.])[-+−]?\d+\.\d+(?![\w.])")


def fill_blocks(text: str, results_dir: Path) -> tuple[str, list[str]]:
    """Replace every ``<!-- table: NAME -->…<!-- end table -->`` block with ``results/NAME.md`` and
    every ``<!-- text: NAME -->…<!-- end text -->`` block with ``TEXTS[NAME](results_dir)`` (or,
    when a file it reads is missing, a line saying which file is not computed yet)."""
    filled = []

    def fill(m: re.Match) -> str:
        if m["kind"] == "table":
            body = (results_dir / f"{m['name']}.md").read_text(encoding="utf-8")
        else:
            try:
                body = lookup(TEXTS, m["name"], "generated text")(results_dir).rstrip("\n") + "\n"
            except FileNotFoundError as e:
                body = (f"*Not computed yet: `{Path(e.filename).name}` is not in `results/` "
                        "(`make reproduce` computes it).*\n")
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


def _saved(src: str, saver: str) -> list[str]:
    """The names a code cell saves, in order: the second argument of each ``saver(...)`` call
    (``save_table`` or ``save_figure``; parsed, so ``df.set_index(["a", "b"])`` as the first is no
    trap)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and len(n.args) > 1
             and getattr(n.func, "attr", getattr(n.func, "id", None)) == saver
             and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)]
    return [n.args[1].value for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset))]


def _saved_tables(src: str) -> list[str]:
    return _saved(src, "save_table")


def _notebook_parts(nb_path: Path) -> dict[str, Any]:
    """From an executed notebook: its title, its question (the title cell's text), each group of
    saved tables and figures with the markdown cell before it, and its generated conclusion (the
    last Markdown output)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    title, intro, sections, conclusion, last_md = nb_path.stem, "", [], "", ""
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            if src.startswith("# "):
                title, _, intro = src.partition("\n")
                title, intro, last_md = title[2:].strip(), intro.strip(), ""
            elif not src.startswith(">"):
                last_md = src
            continue
        tables, figures = _saved(src, "save_table"), _saved(src, "save_figure")
        if tables or figures:
            sections.append((last_md, tables, figures))
            last_md = ""
        for out in c.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md:
                conclusion = "".join(md)
    return {"title": title, "intro": intro, "sections": sections, "conclusion": conclusion}


PARTS = (("Summary and plan", ("06_summary",)),
         ("The claims", ("01_main_table", "02_baselines", "03_directionality", "04_cross_domain_images")),
         ("Beyond the paper", ("11_shakespeare", "05_score_validity", "09_specification_curve", "10_mechanism",
                               "07_many_clients", "00_benchmark")),
         ("Appendix: engineering", ("08_scale_on_flower",)))
"""The report's parts and the notebooks in each, in reading order; a notebook not named here goes
to the end of "Beyond the paper"."""
LONG_TABLE, WIDE_TABLE = 16, 8
"""Tables with more rows or more columns are linked as CSV, not inlined (Markdown cannot show them)."""
PROVENANCE = "provenance.json"  # in the results folder, written by `report`


def _demote(md: str, by: int = 2) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m[1]) + by, 6) + " ", md.strip(), flags=re.M)


def _table_block(results_dir: Path, name: str) -> list[str]:
    """A saved table inlined (at most :data:`LONG_TABLE` rows and :data:`WIDE_TABLE` columns), else
    linked as CSV with its size."""
    md = results_dir / f"{name}.md"
    if not md.is_file():
        return []
    lines = md.read_text(encoding="utf-8").rstrip("\n").splitlines()
    rows, columns = len(lines) - 2, lines[0].count("|") - 1
    if rows > LONG_TABLE or columns > WIDE_TABLE:
        return [f"Table [`{name}.csv`]({name}.csv): {rows} rows, {columns} columns "
                f"(Markdown: [`{name}.md`]({name}.md)).", ""]
    return [f"`{name}`:", "", *lines, ""]


def provenance_text(results_dir: Path) -> str:
    """The report's provenance line, from ``results/provenance.json`` (:func:`write_provenance`)."""
    path = results_dir / PROVENANCE
    if not path.is_file():
        return "Provenance: not recorded (`python -m hasa_results report` records it)."
    p = json.loads(path.read_text(encoding="utf-8"))
    made = "; ".join(f"{n:,} on {cpu}" for cpu, n in p["records_by_cpu"].items())
    return (f"Generated from commit `{p['commit']}` on {p['date']} on {p['machine']} (load average "
            f"{p['load']}). Run records behind these tables: {made}. {engine_text(results_dir)}")


NOTEBOOKS = REPO / "notebooks"  # the source notebooks (their executed paper copies are in results/notebooks/)


def _cells(nb_path: Path) -> list[str]:
    """A notebook's cell sources, without papermill's injected parameters."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"]
            if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def is_current(executed: Path, source: Path) -> bool:
    """Whether an executed notebook ran the source notebook as it is now (same cells, parameters
    injected by papermill aside); True when there is no source to compare with."""
    return not source.is_file() or _cells(executed) == _cells(source)


def _stub(name: str) -> list[str]:
    """The section of a notebook that has no executed paper copy: its title and how to make it."""
    return [f"### {_title(name)}", "", f"*Not computed at the paper profile yet*: `make reproduce` executes "
            f"`notebooks/{name}.ipynb` into `results/notebooks/{name}.ipynb`.", ""]


def _title(nb: Path | str) -> str:
    """A notebook's title as its source states it now (so that links to its section stay valid
    when its paper copy is older); an executed notebook without a source keeps its own."""
    source = NOTEBOOKS / f"{nb.stem if isinstance(nb, Path) else nb}.ipynb"
    return _notebook_parts(source if source.is_file() else nb)["title"]


def _section(results_dir: Path, p: Path, seen: set[str]) -> list[str]:
    parts = _notebook_parts(p)
    out = [f"### {_title(p)}", ""]
    if not is_current(p, NOTEBOOKS / p.name):
        out += [f"*Executed with an earlier version of `notebooks/{p.name}`*: its numbers below are that "
                "version's; `make reproduce` executes the current one.", ""]
    if parts["conclusion"]:
        out += [_demote(parts["conclusion"], 3), ""]
    for md, tables, figures in parts["sections"]:
        new_tables, new_figures = [t for t in tables if t not in seen], [f for f in figures if f not in seen]
        seen |= set(tables) | set(figures)
        if not (new_tables or new_figures):
            continue
        if md:
            out += [_demote(md, 3), ""]
        out += [f"![{name}](../figures/{name}.png)\n" for name in new_figures]
        for name in new_tables:
            out += _table_block(results_dir, name)
    return out


def report_text(results_dir: Path = DEFAULT_RESULTS_DIR) -> str:
    """``results/REPORT.md``: provenance, contents, then per part (:data:`PARTS`) each executed
    notebook's generated conclusion, figures and tables (each once; long ones linked as CSV), then
    the engineering appendices (performance, engine-1 archive). A notebook with no executed paper
    copy has a section that says so; one executed from an earlier version of its source is marked."""
    nbs = {p.stem: p for p in sorted((results_dir / "notebooks").glob("[0-9]*.ipynb"))}
    named = [n for _, names in PARTS for n in names]
    parts = [(part, [nbs.get(n, n) for n in names if n in nbs or (NOTEBOOKS / f"{n}.ipynb").is_file()])
             for part, names in PARTS]
    parts[2][1].extend(nbs[n] for n in nbs if n not in named)
    out = ["# HASA artifact — the full report", "",
           "Generated by `python -m hasa_results report` from `results/` (the executed paper-profile notebooks in "
           "`results/notebooks/` and the tables they wrote); never edited by hand. The front page is the "
           "[README](../README.md); every number here has the notebook that made it beside it.", "",
           provenance_text(results_dir), "", "## Contents", ""]
    for part, notebooks in parts:
        out += [f"* [{part}](#{_anchor(part)})"]
        for p in notebooks:
            title = _title(p)
            made = f"executed notebook [`{p.name}`](notebooks/{p.name})" if isinstance(p, Path) else "not computed yet"
            out += [f"  * [{title}](#{_anchor(title)}) · {made}"]
    out += ["  * [Performance](#performance)", ""]
    seen: set[str] = set()
    for part, notebooks in parts:
        out += [f"## {part}", ""]
        for p in notebooks:
            out += _section(results_dir, p, seen) if isinstance(p, Path) else _stub(p)
        if part.startswith("Appendix"):
            out += _performance(results_dir, seen)
    return "\n".join(out).rstrip("\n") + "\n"


def _performance(results_dir: Path, seen: set[str]) -> list[str]:
    """The engineering appendix: the bench tables (those no notebook showed already) and the
    engine-1 archive."""
    out = ["### Performance", ""]
    for name, what in [("bench", "`make bench` (steady-state training throughput against this machine's matmul)"),
                       ("bench_gpu", "the GPU check on a lent H200")]:
        if (results_dir / f"{name}.csv").is_file() and name not in seen:
            out += [f"{what} ([`{name}.csv`]({name}.csv)):", "", bench_markdown(results_dir / f"{name}.csv")]
    archive = results_dir / "engine1" / "README.md"
    if archive.is_file():
        out += ["### Engine-1 archive", "", "The first tables (our level rule, engine version 1) are kept unchanged "
                "in [`engine1/`](engine1/README.md).", ""]
    return out


def bench_markdown(csv: Path) -> str:
    """A bench table (quantities by row, setups by column, so numbers and words share a column) in
    the house number style: each cell that reads as a number is shown as one."""
    def value(x: Any) -> Any:
        try:
            return float(x)
        except (TypeError, ValueError):
            return x
    df = pd.read_csv(csv, index_col=0, dtype=str, keep_default_na=False)
    return table_markdown(df.map(value))


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown document (GitHub's rule, :func:`_anchor`)."""
    return {_anchor(m[1].strip()) for m in re.finditer(r"^#+ (.+)$", markdown, flags=re.M)}


def write_provenance(results_dir: Path = DEFAULT_RESULTS_DIR) -> Path:
    """Record where the report was made: commit, date (UTC), processor, load average, and how
    many of the paper profile's run records each processor made (``results/provenance.json``)."""
    import datetime
    import os
    import subprocess
    from collections import Counter

    from hasa_core import provenance
    from hasa_records import cached_record
    from hasa_results.experiments import experiments
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    runs = {(c, s) for methods, seeds in experiments("paper", results_dir).values() for c in methods.values()
            for s in seeds}
    cpus = Counter(r["provenance"]["cpu"] for c, s in runs if (r := cached_record(c, s, results_dir)) is not None)
    p = {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "machine": provenance()["cpu"], "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
         "records_by_cpu": dict(cpus.most_common())}
    return write_text_atomic(results_dir / PROVENANCE, json.dumps(p, indent=1) + "\n")


ALL_RUNS = "all_runs.csv.gz"
"""Every run's per-client values, tidy (:func:`all_runs_frame`); gzip-compressed CSV (pandas
reads it as it is): uncompressed, LEAF's 455 clients make it tens of MB."""


def write_all_runs(results_dir: Path = DEFAULT_RESULTS_DIR) -> Path:
    """``results/all_runs.csv.gz`` from the paper profile's cached runs, atomically; the same runs
    give the same bytes (no timestamp in the gzip header)."""
    import os
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=results_dir, prefix=".tmp-all_runs-", suffix=".csv.gz")
    os.close(fd)
    try:
        all_runs_frame("paper", results_dir).to_csv(tmp, index=False, compression={"method": "gzip", "mtime": 0})
        os.replace(tmp, results_dir / ALL_RUNS)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return results_dir / ALL_RUNS


def write_report(results_dir: Path = DEFAULT_RESULTS_DIR, readme: Path = README) -> list[Path]:
    """Record the provenance, export every run (:func:`write_all_runs`), write ``results/REPORT.md``
    and refill the README's generated blocks (each atomically)."""
    written = [write_provenance(results_dir), write_all_runs(results_dir)]
    text, _ = fill_blocks(readme.read_text(encoding="utf-8"), results_dir)
    written.append(write_text_atomic(results_dir / REPORT, report_text(results_dir)))
    return written + [write_text_atomic(readme, text)]


def update_readme(readme: Path = README, results_dir: Path = DEFAULT_RESULTS_DIR) -> list[str]:
    """Refill the README's generated blocks; returns what was filled."""
    text, filled = fill_blocks(readme.read_text(encoding="utf-8"), results_dir)
    write_text_atomic(readme, text)
    return filled


_NAN = re.compile(r"(?<![\w.])(?:nan|NaN)(?![\w.])")
_E_NOTATION = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+(?![\w.])")


def style_problems(name: str, text: str) -> list[str]:
    """A ``nan`` or a number in e-notation anywhere in a page (code spans and blocks excepted)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return [f"{name}: {what} {found[:5]}" for what, pattern in (("nan in", _NAN), ("e-notation in", _E_NOTATION))
            if (found := pattern.findall(prose))]


def broken_report_links(readme_text: str, report_text_: str) -> list[str]:
    """README links into the report (``results/REPORT.md#anchor``) whose anchor is no heading there."""
    have = anchors(report_text_)
    return [a for a in re.findall(r"results/REPORT\.md#([\w-]+)", readme_text) if a not in have]


def check_report(results_dir: Path = DEFAULT_RESULTS_DIR, readme: Path = README) -> list[str]:
    """Problems that make README or REPORT disagree with ``results/``: a stale generated block, a
    stale REPORT, a number typed by hand outside the generated blocks, a ``nan`` or e-notation, a
    README link to a heading the report does not have. Empty when all is well."""
    problems = []
    text = readme.read_text(encoding="utf-8")
    fresh, _ = fill_blocks(text, results_dir)
    if fresh != text:
        stale = [m["name"] for m, f in zip(_BLOCK.finditer(text), _BLOCK.finditer(fresh)) if m[0] != f[0]]
        problems.append(f"{readme.name}: generated blocks differ from results/: {', '.join(stale) or 'layout'}")
    report = results_dir / REPORT
    expected = report_text(results_dir)
    if not report.is_file() or report.read_text(encoding="utf-8") != expected:
        problems.append(f"{report} differs from what results/ produce")
    typed = typed_numbers(text)
    if typed:
        problems.append(f"{readme.name}: numbers typed by hand outside generated blocks: {typed}")
    problems += style_problems(readme.name, text) + style_problems(REPORT, expected)
    problems += [f"{readme.name}: link to results/REPORT.md#{a}: no such heading" for a in
                 broken_report_links(text, expected)]
    return problems
