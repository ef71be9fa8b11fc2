"""Notebook 10, whole: why claim 1's sign depends on the protocol. Where the extra width goes (unit
movement, bands, effective width), the tests at narrower and at the well-trained width, the
accuracy sweep, their plots and the generated sentences.

Imports: :mod:`hasa_core`, :mod:`hasa_results` shared layers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hasa_core import UNIT_TOL, config, units_of
from hasa_results.figures import colour, finish, house_style
from hasa_results.frames import method_of, records_frame
from hasa_results.outputs import current
from hasa_results.stats import compare_family, holm, paired_stats
from hasa_results.words import interval, p_value, pp


def unit_movement_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None
                        ) -> pd.DataFrame:
    """One row per (run, width dimension, unit): how far the unit's input weights moved from their
    initial values (``hasa_core.unit_movement``; the first parameter axis that follows the
    dimension: an LSTM hidden unit's ``w_ih`` rows in all four gates, an embedding column, a
    CNN channel's filter), and the unit's position as a width ``(j + 1) / D``. Records without
    the run extras are skipped."""
    label = label or method_of
    rows = []
    for r in records:
        if "movement" not in r:
            continue
        first = {}
        for e in r["movement"]:
            first.setdefault(e["dim"], e)
        for dim, e in first.items():
            d = len(e["norm"])
            rows += [{"method": label(r), "seed": r["seed"], "dim": dim, "param": e["param"], "unit": j,
                      "position": (j + 1) / d, "movement": v} for j, v in enumerate(e["norm"])]
    return pd.DataFrame(rows)


def kept_units(width: float, size: int) -> int:
    """How many of a dimension's ``size`` units the nested slice of ``width`` keeps (the engine's
    :func:`hasa_core.units_of`; none at width 0): a band (lo, hi] of widths holds units
    kept_units(lo, D) .. kept_units(hi, D) - 1."""
    return 0 if width <= 0 else units_of(width, size)


def band_edges(records: Sequence[dict[str, Any]]) -> list[float]:
    """Width bands between consecutive distinct client widths: 0, every width any method gives a
    client in the first seed's records (2 decimals), and 1."""
    first = min(r["seed"] for r in records)
    return sorted({0.0, 1.0, *(round(w, 2) for r in records if r["seed"] == first for w in r["widths"])})


def band_movement(movement: pd.DataFrame, edges: Sequence[float]) -> pd.DataFrame:
    """Mean unit movement per width band (units whose position lies in (lo, hi]), per method and
    dimension, averaged over units then over seeds (mean and sd over seeds)."""
    m = movement.assign(band=pd.cut(movement["position"], list(edges), include_lowest=True))
    per_seed = m.groupby(["dim", "method", "band", "seed"], observed=True)["movement"].mean()
    out = per_seed.groupby(["dim", "method", "band"], observed=True).agg(["mean", "std"]).reset_index()
    out["units"] = [f"{kept_units(b.left, d)}–{kept_units(b.right, d) - 1}" for b, d in
                    zip(out["band"], out["dim"].map(movement.groupby("dim")["unit"].max() + 1))]
    return out


def control_reference(records: Sequence[dict[str, Any]], movement: pd.DataFrame, label: Callable[[dict], str],
                      control: str, stat: str) -> dict[tuple[int, str], float]:
    """(seed, width dimension) -> ``stat`` ("median" or "mean") of the movement of the ``control``
    run's trained units (its first :func:`kept_units` (B, D); :func:`unit_movement_frame` rows in ``movement``):
    the yardstick a unit's or a band's movement is compared with."""
    budget = {r["seed"]: r["budget"] for r in records if label(r) == control}
    return {(seed, dim): float(g["movement"].iloc[:kept_units(budget[seed], len(g))].agg(stat))
            for (seed, dim), g in movement[movement["method"] == control].groupby(["seed", "dim"])}


def effective_widths(records: Sequence[dict[str, Any]], fraction: float = 0.5,
                     label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """Per (run, client, width dimension): the client's evaluation slice (its first
    :func:`kept_units` (w_k, D) units) and the share of it whose units moved at least ``fraction`` x
    the reference movement, the median movement of the trained units (the first
    :func:`kept_units` (B, D)) of the ``uniform`` run of the
    same seed. ``effective_width`` = that share x w_k: how much of the width a client is evaluated
    with was actually trained."""
    label = label or method_of
    mv = unit_movement_frame(records, label)
    ref = control_reference(records, mv, label, "uniform", "median")
    rows = []
    for r in records:
        if "movement" not in r:
            continue
        mine = mv[(mv["method"] == label(r)) & (mv["seed"] == r["seed"])]
        for dim, units in mine.groupby("dim"):
            d = len(units)
            moved = units["movement"].to_numpy() >= fraction * ref[(r["seed"], dim)]
            for client, w, acc in zip(r["clients"], r["widths"], r["accuracy"]):
                k = kept_units(w, d)
                share = float(moved[:k].mean())
                rows.append({"method": label(r), "seed": r["seed"], "client": client, "dim": dim, "width": w,
                             "trained_share": share, "effective_width": share * w, "accuracy": 100 * acc})
    return pd.DataFrame(rows)


def dilution_association(eff: pd.DataFrame, dim: str, control: str = "uniform", n_resamples: int = 9999,
                         seed: int = 0) -> dict[str, float]:
    """Across (method, client) pairs of every method but ``control``: the Spearman correlation
    between a client's mean effective trained width (dimension ``dim``) and its mean accuracy
    difference against ``control`` (pp, seeds matched). Its permutation p respects the design: the
    accuracy differences are permuted among the clients within each method (each method keeps its
    own clients' values, so a method-level shift cannot pass for a client-level association)."""
    e = eff[eff["dim"] == dim]
    acc = e.pivot_table(index=["client", "seed"], columns="method", values="accuracy")
    diff = acc.drop(columns=control).sub(acc[control], axis=0).groupby("client").mean().stack()
    width = e[e["method"] != control].groupby(["client", "method"])["effective_width"].mean()
    x, y = width.reindex(diff.index).to_numpy(), diff.to_numpy()
    groups = [np.flatnonzero(diff.index.get_level_values("method") == m) for m in diff.index.unique("method")]
    rho = stats.spearmanr(x, y).statistic
    rng, hits = np.random.default_rng(seed), 0
    for _ in range(n_resamples):
        yp = y.copy()
        for g in groups:
            yp[g] = y[rng.permutation(g)]
        hits += abs(stats.spearmanr(x, yp).statistic) >= abs(rho) - 1e-12
    return {"pairs": len(x), "methods": len(groups), "spearman": float(rho),
            "p_perm_within_method": (hits + 1) / (n_resamples + 1)}


def extra_width_movement(movement: pd.DataFrame, budget: float, w_max: float, control: str = "uniform",
                         dim: str = "hid") -> pd.DataFrame:
    """Unit-weighted movement of the extra width: per method, each seed's mean movement over the
    units of ``dim`` beyond the budget's slice and within w_max's (positions in (B, w_max]), then
    mean and sd over seeds; and the ``control``'s trained units (within B). Weighted by units, not a
    mean of band means."""
    m = movement[movement["dim"] == dim]
    beyond = m[(m["position"] > budget + 1e-12) & (m["position"] <= w_max + 1e-12)]
    rows = beyond.groupby(["method", "seed"])["movement"].mean().groupby("method").agg(["mean", "std"])
    inside = m[(m["method"] == control) & (m["position"] <= budget + 1e-12)]
    trained_units = inside.groupby("seed")["movement"].mean()
    rows.loc[f"{control} (its trained units, within B)"] = trained_units.agg(["mean", "std"])
    return rows.drop(index=control, errors="ignore").rename_axis("units")


def width_yardstick(records: Sequence[dict[str, Any]], narrow: str, wide: str, hasa: str) -> pd.DataFrame:
    """What the budget's extra width buys, paired over seeds on the mean client accuracy (pp;
    unadjusted 95 % CIs; family "Width yardstick"): uniform at the larger budget − uniform at the
    smaller one (``wide − narrow``: what spreading the extra width over every client buys), and
    HASA at the larger budget − uniform at the smaller (``hasa − narrow``: what HASA's way of
    spending it buys)."""
    return compare_family(records_frame(records), [(wide, narrow), (hasa, narrow)], "Width yardstick", ("mean",))


def dilution_index(records: Sequence[dict[str, Any]], dim: str = "hid") -> pd.DataFrame:
    """Per run: how far the extra width learned. The mean movement of the units of ``dim`` that
    lie beyond the budget's width B and within the widest client's width, divided by the mean
    movement of the units within B (which every client trains). 1 = the extra width learned as
    much as the shared width; 0 = it never moved. NaN when no client is wider than B."""
    rows = []
    for r in records:
        entry = next((e for e in r.get("movement", []) if e["dim"] == dim), None)
        if entry is None:
            continue
        norm, d = np.asarray(entry["norm"]), len(entry["norm"])
        inner, outer = kept_units(r["budget"], d), kept_units(max(r["widths"]), d)
        ratio = norm[inner:outer].mean() / norm[:inner].mean() if outer > inner else np.nan
        rows.append({"method": method_of(r), "seed": r["seed"], "dilution_index": float(ratio)})
    return pd.DataFrame(rows)


def narrower_evaluation(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None,
                        control: str = "uniform") -> pd.DataFrame:
    """The test of the dilution explanation: each client evaluated with the nested slice of width
    min(w_k, B) (``accuracy_capped``) instead of its allocated w_k, after the same training. Per
    method, paired by seed on the mean client accuracy (pp): capped − allocated (the recovery),
    and capped − ``control``, as ONE Holm family, "Narrower evaluation"."""
    label = label or method_of
    rows = []
    for r in records:
        if "accuracy_capped" in r:
            rows.append({"method": label(r), "seed": r["seed"], "allocated": 100 * np.mean(r["accuracy"]),
                         "capped": 100 * np.mean(r["accuracy_capped"])})
    f = pd.DataFrame(rows)
    wide = {v: f.pivot(index="seed", columns="method", values=v) for v in ("allocated", "capped")}
    out = []
    for m in [m for m in wide["allocated"].columns if m != control]:
        out.append({"comparison": f"{m}: capped − allocated", "metric": "mean",
                    **paired_stats(wide["capped"][m], wide["allocated"][m])})
        out.append({"comparison": f"{m} capped − {control}", "metric": "mean",
                    **paired_stats(wide["capped"][m], wide["allocated"][control])})
    out = pd.DataFrame(out)
    out["family"] = "Narrower evaluation"
    out["p_holm"] = holm(out["p_t"])
    return out


def trained_frontier(norms: Sequence[float], edges: Sequence[float], ref: float, fraction: float = 0.5) -> float:
    """The widest nested slice whose width bands all learned: walking the bands (lo, hi] of
    ``edges`` up from 0 (a unit j of D lies in the band holding (j + 1) / D), the upper edge of
    the last band before the first whose units moved on average less than ``fraction`` x ``ref``
    (0 if the first band did). Bands, not single units: one unit's movement is heavy-tailed (some
    of every run's trained units move a third of the median), a band's mean is not."""
    norms, d, frontier = np.asarray(norms, float), len(norms), 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        units = norms[kept_units(lo, d):kept_units(hi, d)]
        if len(units) == 0:
            continue
        if units.mean() < fraction * ref:
            break
        frontier = float(hi)
    return frontier


def trained_width_evaluation(records: Sequence[dict[str, Any]], fraction: float = 0.5,
                             label: Callable[[dict], str] | None = None, control: str = "uniform"
                             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decisive test of the dilution explanation: each client evaluated, after the same
    training, with the widest nested slice that learned. Per run, the trained frontier is the
    smallest over width dimensions of :func:`trained_frontier`, with the run's own bands (edges 0,
    its distinct client widths, 1) and as reference the mean movement of the ``control`` run's
    trained units (its first :func:`kept_units` (B, D), same seed), so the control's own frontier is B.
    A client is evaluated with the slice of width min(w_k, frontier), read off the record's
    ``accuracy_sweep``, which holds every distinct slice (its widest grid width <= min(w_k, frontier)).

    Returns (one row per run and client: width, frontier, evaluation width, allocated and
    trained-width accuracy in %, for the runs with a sweep; the paired tests on the mean client
    accuracy, per method: trained − allocated (the recovery) and trained − ``control`` allocated
    (the control needs no sweep), as ONE Holm family, "Trained-width evaluation")."""
    label = label or method_of
    mv = unit_movement_frame(records, label)
    ref = control_reference(records, mv, label, control, "mean")
    rows = []
    for r in records:
        if "accuracy_sweep" not in r or "movement" not in r:
            continue
        mine = mv[(mv["method"] == label(r)) & (mv["seed"] == r["seed"])]
        edges = sorted({0.0, 1.0, *r["widths"]})
        frontier = min(trained_frontier(g["movement"], edges, ref[(r["seed"], dim)], fraction)
                       for dim, g in mine.groupby("dim"))
        grid = np.asarray(r["accuracy_sweep"]["grid"])
        for k, (client, w) in enumerate(zip(r["clients"], r["widths"])):
            i = max(int(np.searchsorted(grid, min(w, frontier) + UNIT_TOL)) - 1, 0)
            rows.append({"method": label(r), "seed": r["seed"], "client": client, "width": w, "frontier": frontier,
                         "eval_width": float(grid[i]), "allocated": 100 * r["accuracy"][k],
                         "trained": 100 * r["accuracy_sweep"]["accuracy"][k][i]})
    per_client = pd.DataFrame(rows)
    mean = per_client.groupby(["method", "seed"])[["allocated", "trained"]].mean()
    control_mean = pd.Series({r["seed"]: 100 * float(np.mean(r["accuracy"])) for r in records if label(r) == control})
    tests = []
    for m in [m for m in dict.fromkeys(per_client["method"]) if m != control]:
        mine = mean.loc[m]
        at = {"eval_width_median": float(per_client.loc[per_client["method"] == m, "eval_width"].median())}
        tests.append({"comparison": f"{m}: trained − allocated", "metric": "mean",
                      **paired_stats(mine["trained"], mine["allocated"]), **at})
        tests.append({"comparison": f"{m} trained − {control}", "metric": "mean",
                      **paired_stats(mine["trained"], control_mean.reindex(mine.index)), **at})
    tests = pd.DataFrame(tests)
    tests["family"] = "Trained-width evaluation"
    tests["p_holm"] = holm(tests["p_t"])
    return per_client, tests


def accuracy_sweep_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None
                         ) -> pd.DataFrame:
    """One row per (run, client, grid width) of each record's ``accuracy_sweep``: the accuracy (%)
    of the trained model cut to that width, and the client's allocated width."""
    label = label or method_of
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "client": c, "width": w, "eval_width": g,
                          "accuracy": 100 * a}
                         for r in records if "accuracy_sweep" in r
                         for c, w, accs in zip(r["clients"], r["widths"], r["accuracy_sweep"]["accuracy"])
                         for g, a in zip(r["accuracy_sweep"]["grid"], accs)])


@house_style
def plot_unit_movement(movement: pd.DataFrame, records: Sequence[dict[str, Any]], seeds_note: str = ""):
    """How far each unit moved, by its position as a width (x) and method (colour), median over
    seeds, one panel per width dimension; dotted lines at the widths of the first seed's
    clients under ``hasa``: the units beyond uniform's width are the extra width HASA hands out."""
    import matplotlib.pyplot as plt
    dims = list(dict.fromkeys(movement["dim"]))
    fig, axes = plt.subplots(1, len(dims), figsize=(4.6 * len(dims), 3.2), squeeze=False)
    first = min(r["seed"] for r in records)
    hasa_widths = sorted({round(w, 3) for r in records if r["seed"] == first and method_of(r) == "hasa"
                          for w in r["widths"]})
    for ax, dim in zip(axes[0], dims):
        med = movement[movement["dim"] == dim].groupby(["method", "position"])["movement"].median().reset_index()
        for method, g in med.groupby("method", sort=False):
            ax.plot(g["position"], g["movement"], label=method, lw=1.2, color=colour(method))
        for w in hasa_widths:
            ax.axvline(w, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("unit position (as a width)")
        ax.set_ylabel("movement from init (L2)")
        ax.set_title(f"{dim}: {movement.loc[movement['dim'] == dim, 'param'].iloc[0]} per unit")
    axes[0, 0].legend()
    return finish(fig, f"{seeds_note}; dotted: hasa's client widths, seed {first}" if seeds_note else "")


@house_style
def plot_accuracy_sweep(sweep: pd.DataFrame, budget: float, seeds_note: str = ""):
    """Mean client accuracy (over clients, then over seeds, with its 95 % CI over seeds as a band) of
    each method's trained model cut to every evaluation width of the sweep, one line per method;
    dashed at the budget B. Where a method's line stops rising, wider slices carry nothing more of
    what was learned."""
    import matplotlib.pyplot as plt
    per_seed = sweep.groupby(["method", "seed", "eval_width"])["accuracy"].mean()
    agg = per_seed.groupby(["method", "eval_width"]).agg(["mean", "std", "count"]).reset_index()
    half = stats.t.ppf(0.975, np.maximum(agg["count"] - 1, 1)) * agg["std"] / np.sqrt(agg["count"])
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for method, g in agg.assign(half=half).groupby("method", sort=False):
        ax.plot(g["eval_width"], g["mean"], label=method, lw=1.2, color=colour(method))
        ax.fill_between(g["eval_width"], g["mean"] - g["half"], g["mean"] + g["half"], color=colour(method),
                        alpha=0.2)
    ax.axvline(budget, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("evaluation width (nested slice of the trained model)")
    ax.set_ylabel("mean client accuracy (%)")
    ax.legend(title=f"bands: 95 % CI over seeds; dashed: B = {budget:g}")
    return finish(fig, seeds_note)


def mechanism_sentence(extra: pd.DataFrame, association: pd.DataFrame, narrower: pd.DataFrame,
                       trained: pd.DataFrame, yardstick: pd.DataFrame, budget: float, w_max: float) -> str:
    """The dilution explanation of claim 1's sign, in one generated paragraph (Medium): the
    unit-weighted movement of the extra width (:func:`extra_width_movement`), the association
    (within-method permutation), the narrower-evaluation test at B, the decisive test at the
    well-trained width (:func:`trained_width_evaluation`), and the yardstick of what width buys
    (:func:`width_yardstick`). All tests exploratory, each in its named Holm family."""
    e = extra["mean"]
    a = association.set_index("dim").loc["hid"]
    n, t = narrower.set_index("comparison"), trained.set_index("comparison")
    y = yardstick.set_index("comparison")

    def said(table: pd.DataFrame, c: str, family: str) -> str:
        r = table.loc[c]
        return f"{pp(r['diff'])} {interval(r['ci_low'], r['ci_high'])}, {p_value(r['p_holm'], 'Holm p')} ({family})"
    control = next(i for i in e.index if i.startswith("uniform"))
    rec = t.loc["hasa: trained − allocated"]
    spread, hasa_way = y.iloc[0], y.iloc[1]
    if rec["p_holm"] < 0.05 and rec["diff"] > 0:
        harm = "the under-trained width **harms**: removing it recovers accuracy"
    elif rec["ci_high"] < -t.loc["hasa trained − uniform", "diff"] + rec["diff"]:
        harm = ("the 95 % CI excludes a recovery that would close the gap to uniform: the under-trained width does "
                "**not harm** enough to explain the loss")
    else:
        harm = f"whether the under-trained width harms is not established (MDE80 {rec['mde80']:.2f} pp)"
    waste = ("the extra width HASA hands out buys less than spreading it does (the intervals do not overlap)"
             if hasa_way["ci_high"] < spread["ci_low"] else
             "whether HASA's extra width buys less than spreading it does is not established (the intervals overlap)")
    return (f"**Where the extra width goes** (notebook 10, Medium, LSTM hidden units; exploratory): the units "
            f"beyond uniform's width (B = {budget:g} to w_max = {w_max:g}) moved {e.get('hasa', float('nan')):.3f} "
            f"on average under `hasa` (`full`) and {e.get('hasa·sel', float('nan')):.3f} under `hasa·sel`, against "
            f"{e[control]:.3f} for uniform's trained units (unit-weighted means over seeds). A client's effective "
            f"trained width and its accuracy difference against uniform: Spearman ρ = {a['spearman']:.2f} over "
            f"{int(a['pairs'])} client × method pairs ({p_value(a['p_perm_within_method'], 'permutation p')}, "
            f"clients permuted within each method). Evaluating every client at min(w_k, B) changes `hasa`'s mean "
            f"accuracy by {said(n, 'hasa: capped − allocated', 'Narrower evaluation')}; cutting each client to the "
            f"widest slice that learned (median width {rec['eval_width_median']:.2f}) changes it by "
            f"{said(t, 'hasa: trained − allocated', 'Trained-width evaluation')}, so {harm}. What the extra width "
            f"of B = {budget:g} buys (family 'Width yardstick', paired over seeds): spread over every client "
            f"({y.index[0]}), {said(y, y.index[0], 'Width yardstick')}; handed out HASA's way ({y.index[1]}), "
            f"{said(y, y.index[1], 'Width yardstick')}: {waste}.")


def mechanism_text(results_dir: Path) -> str:
    """The README's mechanism paragraph, from notebook 10's tables."""
    names = ("extra", "association", "narrower", "trained_width", "yardstick")
    paths = [current(results_dir / f"mechanism_{n}.csv") for n in names]
    if not all(p.is_file() for p in paths):
        return "The mechanism analysis (notebook 10) has not been computed into `results/` yet."
    extra, association, narrower, trained, yardstick = (pd.read_csv(p) for p in paths)
    cfg = config("paper")
    return mechanism_sentence(extra.set_index("units"), association, narrower, trained, yardstick, cfg.budget,
                              cfg.w_max)
