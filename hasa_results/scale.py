"""Notebooks 07 and 08: many clients, and both engines at 1,000 clients (from the CSVs
:mod:`hasa_bench` writes), their plots and the generated sentences.

Imports: :mod:`hasa_results` shared layers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_results.figures import colour, finish, house_style
from hasa_results.frames import method_of
from hasa_results.outputs import cell, current
from hasa_results.words import say


@house_style
def plot_many_clients(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None):
    """A many-client federation, one record per method of one seed. Left: each client's width
    against its n_k (log scale). Right: the budget each round's participants spend
    (``round_budget_used``), as a histogram per method, with B dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    label = label or method_of
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for rec in records:
        a.scatter(rec["sizes"], rec["widths"], s=10, alpha=0.6, label=label(rec), color=colour(label(rec)))
    a.set_xscale("log")  # n_k spans three orders of magnitude
    a.set_xlabel("n_k (training targets of the client)")
    a.set_ylabel("width w_k")
    a.legend()
    spend = pd.DataFrame({"method": [label(r) for r in records for _ in r["round_budget_used"]],
                          "spend": [v for r in records for v in r["round_budget_used"]]})
    sns.histplot(spend, x="spend", hue="method", bins=40, element="step", ax=b,
                 palette={m: colour(m) for m in spend["method"].unique()})
    b.axvline(records[0]["budget"], color="k", ls="--", lw=1)
    b.set_xlabel("budget spent by a round's participants (B dashed)")
    return finish(fig)


TARGET_LABELS = {"seconds per round (median)": "training round (median)",
                 "wall seconds of the training rounds": "wall time of the training rounds",
                 "peak PSS MiB (all processes)": "peak memory (PSS)", "wall seconds": "total wall time",
                 "peak RSS MiB (all processes)": "peak memory (RSS)"}
"""Words for the rows of notebook 08's target and before/after tables (``hasa_bench``)."""


def targets_sentence(targets: pd.DataFrame) -> str:
    """``hasa_flower.scale_targets`` in one sentence: each ratio, its target, met or missed by how much."""
    said = [f"{TARGET_LABELS[name]} {r['flower / in-process']:.2f}× (target ≤ {r['target']:.1f}×: "
            + ("met" if r["met"] else f"missed by {r['over target %']:.0f} %") + ")" for name, r in targets.iterrows()]
    return "Flower / in-process: " + "; ".join(said) + "."


def before_after_sentence(compared: pd.DataFrame) -> str:
    """``hasa_flower.before_after`` in one sentence: each target's Flower / in-process ratio before → after."""
    return "; ".join(f"{TARGET_LABELS[name]} {r['ratio before']:.2f}× → {r['ratio after']:.2f}×"
                     for name, r in compared.iterrows()) + "."


def flower_scale_text(results_dir: Path) -> str:
    """The README's sentence on Flower at 1,000 clients (notebook 08's targets, before and after)."""
    targets = pd.read_csv(current(results_dir / "scale_targets.csv"), index_col=0)
    text = ("**Measured at 1,000 clients, 100 per round** (generated from `results/scale_targets.csv`, "
            f"notebook 08): {targets_sentence(targets)}")
    if (compared := current(results_dir / "scale_before_after.csv")).exists():
        b = pd.read_csv(compared, index_col=0)
        def unit(name: str) -> str:
            return "MiB" if "MiB" in name else "s"
        absolute = "; ".join(f"{TARGET_LABELS[name]} {cell(r['flower before'])} → {cell(r['flower after'])} "
                             f"{unit(name)} (in-process {cell(r['in-process before'])} → {cell(r['in-process after'])})"
                             for name, r in b.iterrows())
        text += (" Before → after the link state indexed by node, the digit pools mapped from one copy and the "
                 f"nodes' client cache capped, Flower / in-process: {before_after_sentence(b)} Flower itself: "
                 f"{absolute}.")
    return text


def scale_conclusion(measures: pd.DataFrame, overhead: dict[str, Any], targets: pd.DataFrame,
                     compared: pd.DataFrame | None, sweep: pd.DataFrame) -> str:
    """Notebook 08's conclusion from its numbers: both engines, the targets, before and after,
    where Flower's time goes and what the window sweep found."""
    m, o, f = measures, overhead, measures.loc["flower"]
    scan_s, scan_n = o["flwr link state: get_message_ins, seconds"], o["flwr link state: get_message_ins, calls"]
    rounds_s = f["wall seconds"] - f["seconds outside training rounds"]
    text = (f"**Measured ({o['clients']} clients, {o['participants per round']:.0f} per round, "
            f"{o['messages']} messages; "
            f"load average {m['load average before'].min():.2f}–{m['load average after'].max():.2f}).** "
            f"In-process: {m.loc['in-process', 'seconds per round (median)']:.2f} s per training round (median), "
            f"{m.loc['in-process', 'wall seconds']:.0f} s in all, peak memory "
            f"{m.loc['in-process', 'peak RSS MiB (all processes)']:.0f} MiB. Flower's Simulation Engine "
            f"(window {o['messages in flight (window)']}): {f['seconds per round (median)']:.2f} s per round, "
            f"{f['wall seconds']:.0f} s in all, peak memory {f['peak RSS MiB (all processes)']:.0f} MiB over all "
            f"processes; parameters identical: {o['identical parameters']}. {targets_sentence(targets)}\n\n"
            f"**Where Flower's time goes.** Start-up and shut-down {f['start-up and shut-down seconds']:.0f} s, "
            f"statistics query {f['statistics query seconds']:.0f} s (it includes the actors' start: Ray "
            f"starts them when the first messages arrive), training rounds {rounds_s:.0f} s, "
            f"evaluation {f['evaluation seconds']:.0f} s. CPU: driver {f['CPU seconds: driver']:.0f} s (server, "
            f"link state, engine threads), Ray actors {f['CPU seconds: Ray actors']:.0f} s, Ray's own processes "
            f"{f['CPU seconds: Ray system']:.0f} s, against {m.loc['in-process', 'CPU seconds (all processes)']:.0f} s "
            f"in-process. Peak memory: driver {f['peak RSS MiB: driver']:.0f} MiB, Ray actors "
            f"{f['peak RSS MiB: Ray actors']:.0f} MiB (each keeps a bounded cache of the clients it built), Ray's "
            f"own processes {f['peak RSS MiB: Ray system']:.0f} MiB. Flower's link state spent {scan_s:.1f} s in "
            f"{scan_n:,} look-ups of a node's messages ({1000 * scan_s / o['messages']:.2f} ms per message); "
            "indexed by node (`hasa_flower.linkstate`), a look-up reads only that node's messages.")
    if compared is not None:
        text += f"\n\n**Before → after (Flower / in-process).** {before_after_sentence(compared)}"
    best = sweep["wall seconds"].idxmin()
    text += ("\n\n**Window.** Wall seconds by messages in flight: "
             + ", ".join(f"{w}: {s:.0f} s" for w, s in sweep["wall seconds"].items())
             + f" (load average {sweep['load average before'].min():.2f}–{sweep['load average before'].max():.2f}); "
             f"the shortest run had window {best}, one run per window.")
    window = str(o["messages in flight (window)"])
    if window in sweep.index:
        text += (f" The same window-{window} run took {f['wall seconds']:.0f} s in the comparison above and "
                 f"{sweep.loc[window, 'wall seconds']:.0f} s here: differences of that size are run-to-run noise.")
    return text


ENGINE_PHASES = ("start-up and shut-down seconds", "statistics query seconds", "evaluation seconds")
"""Columns of ``hasa_flower.compare_engines``' measurements that split a Flower run's wall time."""


def engine_phases(measures: pd.DataFrame, round_seconds: dict[str, Sequence[float]]) -> pd.DataFrame:
    """Wall seconds of each engine's run by phase: training rounds (the sum of ``round_seconds``),
    the :data:`ENGINE_PHASES` columns where measured (Flower), and ``other``: the rest of the wall time."""
    rows = {}
    for engine in measures.index:
        row = {"training rounds": float(np.sum(round_seconds[engine]))}
        row.update({c.removesuffix(" seconds"): float(np.nan_to_num(measures.loc[engine, c]))
                    for c in ENGINE_PHASES if c in measures.columns})
        row["other"] = measures.loc[engine, "wall seconds"] - sum(row.values())
        rows[engine] = row
    return pd.DataFrame(rows).T


@house_style
def plot_engines(measures: pd.DataFrame, round_seconds: dict[str, Sequence[float]], title: str = ""):
    """The two engines side by side. Left: wall seconds of each training round. Right: wall
    seconds of the run by phase (:func:`engine_phases`), with the peak resident memory of all
    processes written on each bar."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for engine, rs in round_seconds.items():
        a.plot(np.arange(1, len(rs) + 1), rs, marker=".", label=engine)
    a.set_xlabel("round")
    a.xaxis.get_major_locator().set_params(integer=True)
    a.set_ylabel("seconds (training + aggregation)")
    a.set_ylim(bottom=0)
    a.legend()
    split = engine_phases(measures, round_seconds)
    split = split.loc[:, (split.abs() > 0).any()]
    bottom = np.zeros(len(split))
    for phase in split.columns:
        b.bar(split.index, split[phase].clip(lower=0), bottom=bottom, label=phase)
        bottom += split[phase].clip(lower=0).to_numpy()
    for i, e in enumerate(measures.index):
        b.text(i, measures.loc[e, "wall seconds"], f"{measures.loc[e, 'peak RSS MiB (all processes)']:.0f} MiB",
               ha="center", va="bottom")
    b.set_ylabel("wall seconds")
    b.legend()
    return finish(fig, title)


def many_clients_text(results_dir: Path) -> str:
    t = pd.read_csv(current(results_dir / "many_clients_paired_tests.csv")).set_index(["comparison", "metric"])
    cmp = t.index[0][0]
    return (f"**Measured** (generated from `results/many_clients_paired_tests.csv`): {cmp}, mean "
            f"{say(t, cmp, 'mean', family=True)}; tail {say(t, cmp, 'tail')}.")
