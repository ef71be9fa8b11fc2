"""The HASA artifact's study: experiments, frames, statistics, tables, figures, report and README.

This module only calls the engine (:mod:`hasa_core`); it trains nothing and holds no model
numerics. The notebooks in ``notebooks/`` import both modules. Sections:

    1. experiments  every experiment of the artifact by name (``experiments``), ``precompute``,
                    ``run_experiment`` (the notebooks' entry point), method labels
    2. frames       records -> pandas frames (one row per run, per evaluation, per client)
    3. statistics   paired tests over seeds (t-based CIs, Wilcoxon), Holm within a named family,
                    power and minimum detectable effect, score validity
    4. tables and figures   ``save_table`` / ``save_figure`` (written atomically; under ``make
                    reproduce`` staged, and published only when the whole notebook succeeded), the plots
    5. report       generated sentences, ``results/REPORT.md`` and the README's generated blocks,
                    ``report --check``
    6. bench and command line  ``python -m hasa_results precompute | report [--check] | publish | bench``

The map: how one number travels from the data to the README (the Table 1 HASA - uniform mean).

    data      hasa_core.load_medium -> medium_partition(cfg, seed): the 7 clients' splits and vocabulary
    task      hasa_core.load_task(cfg, seed)
    plan      hasa_core.plan(cfg, task, seed): scores (Eq. 11) -> widths (Eqs. 13-17)
    run       hasa_core.run(cfg, seed): 30 rounds of local SGD + aggregation -> per-client accuracy
    record    hasa_core.cached_run / run_many: results/runs/<cfg.key()>/seed<N>.json (checked)
    frame     hasa_results.run_experiment("table1", "paper") -> records_frame: one row per run
    test      compare_family(df, [("hasa", "uniform"), ...], "Table 1") -> paired_stats + holm
    table     save_table(tests, "table1_paired_tests") -> results/table1_paired_tests.{csv,md}
    headline  headline_table() reads that CSV -> results/headline.{csv,md} (notebook 06)
    README    write_readme() fills <!-- table: headline --> and the generated verdict sentences;
              ``python -m hasa_results report --check`` (run by ``make test``) fails when README.md
              or results/REPORT.md differ from what results/ produces.

Every step calls the next module down (notebook -> hasa_results -> hasa_core), never back.
"""
from __future__ import annotations

import ast
import functools
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hasa_core import (
    BENCHMARKS,
    DEFAULT_RESULTS_DIR,
    ENGINE_VERSION,
    EXTRAS,
    PROFILES,
    REPO,
    SWEEP,
    UNIT_TOL,
    RunConfig,
    Task,
    bench,
    bench_summary,
    cached_record,
    compute_scores,
    config,
    has_extras,
    load_task,
    lookup,
    many_clients_config,
    partition,
    plan,
    run_many,
    summarize_accuracies,
    units_of,
    write_text_atomic,
)

# =============================================================================================
# 1. Experiments: one definition, used by the notebooks and by `precompute`
# =============================================================================================

EXTRACTION_NAMES = {"static": "HeteroFL", "rolling": "FedRolex", "random": "FedDropout", "ordered": "FjORD"}


def canonical(cfg: RunConfig) -> RunConfig:
    """The one config that stands for ``cfg``'s computation. When every client trains the same
    units (one common width under static, rolling or FjORD extraction: ``uniform``, ``smallest``,
    ``full``), the ``full`` and ``selective`` aggregation protocols are the same arithmetic, so
    both protocols' rows are served by one run (aggregation ``full``)."""
    if cfg.policy in ("uniform", "smallest", "full") and cfg.extraction != "random":
        return cfg.replace(aggregation="full")
    return cfg


def method_label(cfg: RunConfig) -> str:
    """The one name of a run's method everywhere (tables, figures, prose): the policy, then the
    extraction (·FedRolex, ·FedDropout, ·FjORD; HeteroFL's static slices are the default), ·sel for
    the selective protocol, [score] when not the published ``js``, and any budget setting that
    differs from the profile's."""
    base = config(_profile_of(cfg), benchmark=cfg.benchmark)
    label = cfg.policy
    if cfg.extraction != "static":
        label += "·" + EXTRACTION_NAMES[cfg.extraction]
    if canonical(cfg).aggregation == "selective":
        label += "·sel"
    if cfg.weighting == "count" and cfg.row_masking:
        label += "·as published"
    elif cfg.weighting == "count" or cfg.row_masking:
        label += "·count" if cfg.weighting == "count" else "·row-masked"
    name = SCORE_LABELS.get(cfg.score, cfg.score)
    score = f"shuffled {name}" if cfg.shuffle_scores else name
    if cfg.score == "random":
        score += f" #{cfg.score_draw}"
    scored = cfg.policy not in ("uniform", "uniform_levels", "smallest", "full")
    if (cfg.score != "js" or cfg.shuffle_scores) and scored:
        label += f"[{score}]"
    extras = [f"{name}={getattr(cfg, name):g}" for name in ("budget", "w_min", "w_max", "cap", "alpha")
              if getattr(cfg, name) != getattr(base, name) and (name == "budget" or cfg.policy in ("hasa", "reverse"))]
    if cfg.digits_clients_per_domain != base.digits_clients_per_domain:
        extras.append(f"{cfg.digits_clients_per_domain}/domain")
    if cfg.partition != "natural":
        extras.append({"publication_day": "by day",
                       "dirichlet": f"{cfg.num_clients} Dir({cfg.dirichlet_alpha:g})"}[cfg.partition])
    if cfg.participation < 1:
        extras.append(f"{cfg.participation:.0%}/round")
    return label + (f" ({', '.join(extras)})" if extras else "")


SCORE_LABELS = {"given": "need"}
"""Display names of scores whose engine name says how, not what: the image study's ``given``
scores are the clients' measured need for width (:func:`measured_need`)."""


def _profile_of(cfg: RunConfig) -> str:
    smoke = PROFILES["smoke"][cfg.benchmark]
    return "smoke" if all(getattr(cfg, k) == v for k, v in smoke.items()) else "paper"


SEEDS = {"paper": 10, "smoke": 3}         # the paper-matched view: 10 seeds


POWER_SEEDS = {"paper": 30, "smoke": 3}   # the core comparisons: for 80% power at +0.50 pp


SPECIFICATIONS: dict[str, dict[str, Any]] = {
    # name -> RunConfig overrides of the paper profile's Medium setup: each varies one choice the
    # paper leaves open (ours, see RunConfig); "default" is the setup of every other table.
    "default": {},
    "E = H = 64": {"emb_dim": 64, "hidden_dim": 64},
    "E = H = 256": {"emb_dim": 256, "hidden_dim": 256},
    "2 local epochs": {"local_epochs": 2},
    "5 local epochs": {"local_epochs": 5},
    "lr 0.3": {"lr": 0.3},
    "lr 2.0": {"lr": 2.0},
    "batch 16": {"batch_size": 16},
    "batch 64": {"batch_size": 64},
    "min-count 5": {"min_count": 5},
    "100 rounds": {"rounds": 100},
    "momentum 0.9, lr 0.1": {"momentum": 0.9, "lr": 0.1},
}
SMOKE_SPECIFICATIONS = ("default", "E = H = 64", "lr 0.3", "2 local epochs")  # the smoke profile's subset
SPEC_METHODS = ("uniform", "hasa", "hasa·sel")  # per specification, paired by seed


def specifications(profile: str) -> dict[str, dict[str, Any]]:
    """The specification curve's setups for a profile (the smoke profile runs a subset)."""
    names = SPECIFICATIONS if profile == "paper" else SMOKE_SPECIFICATIONS
    return {name: SPECIFICATIONS[name] for name in names}


def spec_methods(profile: str, spec: str) -> dict[str, RunConfig]:
    """uniform, hasa (``full``) and hasa·sel of one specification, by :data:`SPEC_METHODS` name."""
    m = functools.partial(config, profile, "medium", **lookup(specifications(profile), spec, "specification"))
    return dict(zip(SPEC_METHODS, (canonical(m()), m(policy="hasa"), m(policy="hasa", aggregation="selective"))))


def spec_label(spec: str, cfg: RunConfig) -> str:
    """A specification run's method name: :func:`method_label`, then ``[<setup>]`` outside the default."""
    return method_label(cfg) if spec == "default" else f"{method_label(cfg)} [{spec}]"


NEED_SEEDS = {"paper": list(range(100, 110)), "smoke": [100, 101]}
"""Seeds on which the image study measures each client's need for width for the positive control:
disjoint from every test seed (0-29), so the allocation by need never sees the runs it is judged on."""

CLAIM4_SCORES = ("random", "js", "feature_js", "loss", "given")
"""The score variants of claim 4's dependence test, from no information to the measured need."""


def measured_need(profile: str, results_dir: Path | None = None) -> tuple[float, ...] | None:
    """Each digits client's need for width (pp, client order): its accuracy with every client at
    full width minus with every client at w_min, averaged over :data:`NEED_SEEDS` (the
    ``need_digits`` experiment's records). None until those records exist: the positive control's
    configs depend on them, so :func:`precompute` makes them first."""
    d = functools.partial(config, profile, "digits")
    root = results_dir or output_dirs(profile)[0]
    recs = {(p, s): cached_record(canonical(d(policy=p)), s, root) for p in ("smallest", "full")
            for s in NEED_SEEDS[profile]}
    if any(r is None for r in recs.values()):
        return None
    need = np.mean([np.subtract(recs["full", s]["accuracy"], recs["smallest", s]["accuracy"])
                    for s in NEED_SEEDS[profile]], axis=0)
    return tuple(round(100 * float(v), 6) for v in need)


AS_PUBLISHED = {"weighting": "count", "row_masking": True}
"""HeteroFL's and FedRolex's official aggregation: each client counted once per element, and the
vocabulary rows averaged over the clients whose data hold them (absent classes masked in training)."""


def experiments(profile: str, results_dir: Path | None = None) -> dict[str, tuple[dict[str, RunConfig], list[int]]]:
    """Every experiment of the artifact for a profile: name -> ({label: config}, seeds).

    ``table1`` HASA vs uniform (both protocols, our level rule as a variant); ``core`` uniform, HASA
    and reverse over the powered seed set; ``table2`` matched-budget partial-training baselines
    (selective protocol); ``table3`` directionality and score controls; ``sensitivity`` the
    re-implementation's defaults varied; ``budget`` other budgets; ``need`` every client at w_min
    and at full width; ``digits`` and ``digits3`` the cross-domain image study (1 and 3 clients
    per domain); ``many`` HASA vs uniform on the 282-client (publication, day) federation with 10 %
    participation; ``mechanism`` / ``mechanism_digits`` where the extra width goes (records
    with the run extras); ``spec`` the specification curve (every :func:`specifications` setup x
    :data:`SPEC_METHODS`, labelled by :func:`spec_label`) and ``spec_power`` its default row over
    the powered seeds. ``claims`` holds every Medium run of the declared primary tests of claims 1-3
    (both protocols, the powered seeds); ``need_digits`` measures the digits clients' need for width
    on :data:`NEED_SEEDS`; ``claim4`` holds the image study's runs of claim 4's dependence test (every
    :data:`CLAIM4_SCORES` variant, both protocols; the ``given`` variant, the positive control,
    only once ``need_digits`` is computed, see :func:`measured_need`). Labels come from
    :func:`method_label`, so one run has one name everywhere."""
    def group(*cfgs: RunConfig) -> dict[str, RunConfig]:
        cfgs = [canonical(c) for c in cfgs]
        return {method_label(c): c for c in cfgs}

    m = functools.partial(config, profile, "medium")
    d = functools.partial(config, profile, "digits")
    d3 = functools.partial(config, profile, "digits", digits_clients_per_domain=3)
    n = list(range(SEEDS[profile]))
    powered = list(range(POWER_SEEDS[profile]))
    levels = m(policy="hasa_levels", score="js_targets", aggregation="selective")
    protocols = ("full", "selective")
    need = measured_need(profile, results_dir)
    claim4_scores = [(s, {}) for s in CLAIM4_SCORES if s != "given"]
    claim4_scores += [("given", {"score_values": need})] if need else []
    table2 = [m(policy=p, extraction=e, aggregation="selective")
              for e in ("static", "rolling", "random", "ordered") for p in ("uniform", "hasa")]
    table2 += [m(policy=p, extraction=e, aggregation="selective", **AS_PUBLISHED)  # HeteroFL, FedRolex
               for e in ("static", "rolling") for p in ("uniform", "hasa")]
    return {
        "table1": (group(m(), m(policy="hasa"), m(policy="hasa", aggregation="selective"), levels), n),
        "core": (group(m(), m(policy="hasa"), m(policy="reverse")), list(range(POWER_SEEDS[profile]))),
        "table2": (group(*table2, levels, m(policy="smallest"), m(policy="full")), n),
        "table3": (group(m(), m(policy="hasa"), m(policy="reverse"),
                         *(m(policy="hasa", score="random", score_draw=i) for i in (0, 1)),
                         m(policy="hasa", shuffle_scores=True), m(policy="hasa", score="size")), n),
        "sensitivity": (group(m(), m(policy="hasa"), m(policy="hasa", alpha=0.01),
                              m(policy="hasa", w_min=0.25, w_max=1.0, cap=1.0),
                              m(policy="hasa", w_min=0.25, w_max=1.0, cap=1.0, alpha=0.01)), n),
        "budget": (group(*(m(policy=p, budget=b) for b in (0.3, 0.7) for p in ("uniform", "hasa"))), n),
        "need": (group(m(policy="smallest"), m(policy="full")), n),
        "digits": (group(d(), d(policy="hasa"), d(policy="hasa", score="feature_js"),
                         d(policy="reverse", score="feature_js"), d(policy="smallest"), d(policy="full")), n),
        "digits3": (group(d3(), d3(policy="hasa"), d3(policy="hasa", score="feature_js")), n),
        "many": (group(many_clients_config(profile), many_clients_config(profile, policy="hasa")), n),
        "spec": ({spec_label(spec, c): c for spec in specifications(profile)
                  for c in spec_methods(profile, spec).values()}, n),
        "spec_power": (group(*spec_methods(profile, "default").values()), list(range(POWER_SEEDS[profile]))),
        "mechanism": (group(m(), m(policy="hasa"), m(policy="hasa", aggregation="selective"), m(policy="reverse")),
                      n),
        "mechanism_digits": (group(d(), d(policy="hasa"), d(policy="hasa", score="feature_js"),
                                   d(policy="reverse", score="feature_js")), n),
        "claims": (group(m(), *(m(policy=p, aggregation=a) for p in ("hasa", "reverse") for a in protocols),
                         *(m(extraction=e, aggregation=a) for e in ("rolling", "ordered", "random")
                           for a in protocols)),
                   powered),
        "need_digits": (group(d(policy="smallest"), d(policy="full")), NEED_SEEDS[profile]),
        "claim4": (group(d(), d(policy="smallest"), d(policy="full"),
                         *(d(policy="hasa", score=s, aggregation=a, **extra) for s, extra in claim4_scores
                           for a in protocols)), powered),
    }


WITH_EXTRAS = {"spec": EXTRAS, "mechanism": EXTRAS + SWEEP, "mechanism_digits": EXTRAS}
"""Experiments whose records must hold run extras, and which (``hasa_core.EXTRAS``: unit movement,
accuracy at min(w_k, B); ``SWEEP``: accuracy at every width of a grid): older records of their
configs are re-run once to fill them (``hasa_core.fill_extras``)."""


def precompute(profile: str, n_jobs: int = 2, results_dir: Path | None = None,
               only: Sequence[str] | None = None) -> int:
    """Every (config, seed) that the profile's experiments need, in one pool of ``n_jobs``
    processes, lowest seeds first (so the 10-seed tables are complete before the extra seeds of
    the powered comparisons); the notebooks then only read the cache. Experiments whose configs
    are made from other runs' records (the positive control of claim 4, :func:`measured_need`)
    appear once those are cached: precompute repeats until nothing is pending. Returns the number
    of distinct runs."""
    results_dir = results_dir or output_dirs(profile)[0]
    unknown = sorted(set(only or ()) - set(experiments(profile, results_dir)))
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; valid names: "
                         f"{', '.join(experiments(profile, results_dir))}")

    def done(c: RunConfig, s: int, extras: tuple[str, ...]) -> bool:
        rec = cached_record(c, s, results_dir)
        return rec is not None and has_extras(rec, extras)
    computed = 0
    while True:
        jobs: dict[tuple[str, int], tuple[RunConfig, int, tuple[str, ...]]] = {}
        for name, (methods, seeds) in experiments(profile, results_dir).items():
            if not only or name in only:
                for c in methods.values():
                    for s in seeds:
                        before = jobs.get((c.key(), s), (c, s, ()))[2]
                        jobs[(c.key(), s)] = (c, s, tuple(dict.fromkeys(before + WITH_EXTRAS.get(name, ()))))
        pending = [job for job in jobs.values() if not done(*job)]
        if not pending:
            break
        print(f"precompute ({profile}): {len(jobs)} distinct runs, {len(jobs) - len(pending)} reused from the "
              f"cache, {len(pending)} to compute (or to re-run for their extras)")
        for seed in sorted({s for _, s, _ in pending}):
            for extras in sorted({e for _, s, e in pending if s == seed}, key=len, reverse=True):
                cfgs = sorted((c for c, s, e in pending if s == seed and e == extras),
                              key=lambda c: -c.rounds * c.local_epochs * c.hidden_dim)
                # the longest first, so that the pool's last minutes are not one long run
                run_many(cfgs, [seed], n_jobs, results_dir, desc=f"{profile}, seed {seed}", extras=extras)
        computed += len(pending)
    print(f"precompute ({profile}): done; {len(jobs) - computed} records reused, {computed} computed")
    return len(jobs)


def run_methods(methods: dict[str, RunConfig], seeds: Sequence[int], n_jobs: int = 2,
                results_dir: Path | None = None, progress: bool = True,
                extras: Sequence[str] = ()) -> list[dict[str, Any]]:
    """:func:`run_many` over named configs (records holding the run-extra fields ``extras``); each
    record gets its name under ``"method"``."""
    names, cfgs = list(methods), list(methods.values())
    recs = run_many(cfgs, seeds, n_jobs, results_dir, desc="runs", progress=progress, extras=extras)
    return [{**r, "method": names[i // len(seeds)]} for i, r in enumerate(recs)]


def run_experiment(name: str, profile: str, n_jobs: int = 2, results_dir: Path | None = None,
                   n_seeds: int | None = None) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of one of :func:`experiments` (cached; computed where missing), each labelled
    with its method name, and the experiment's seeds (``n_seeds``: only its first n_seeds, for an
    interim look at a long experiment; all when None)."""
    methods, seeds = lookup(experiments(profile), name, "experiment")
    if n_seeds is not None and not 1 <= n_seeds <= len(seeds):
        raise ValueError(f"n_seeds must be between 1 and {len(seeds)} (experiment {name!r}); got {n_seeds}")
    seeds = seeds[:n_seeds]
    results_dir = results_dir or output_dirs(profile)[0]
    return run_methods(methods, seeds, n_jobs, results_dir, progress=profile != "smoke",
                       extras=WITH_EXTRAS.get(name, ())), seeds


def seeds_note(profile: str, seeds: Sequence[int]) -> str:
    """A figure/table label naming the profile and the seed set."""
    return f"{profile} profile, seeds {min(seeds)}–{max(seeds)} (n = {len(seeds)})"


PAPER_ACCURACY = {"uniform": 13.82, "hasa": 14.32}
"""The paper's mean client accuracy (%) on Medium, 10 seeds (abstract of arXiv 2606.07621)."""
PAPER_GAIN = PAPER_ACCURACY["hasa"] - PAPER_ACCURACY["uniform"]  # the paper's HASA - uniform, pp


def conclusion(profile: str, text: str) -> str:
    """A notebook's conclusion: ``text`` for the paper profile; for any other profile a notice
    that no verdict is drawn from its sample-sized numbers."""
    if profile == "paper":
        return text
    return (f"**{profile} run on samples: no verdict is drawn from these numbers.** The paper-profile "
            "results and their conclusions are in `results/notebooks/` and the README.")


# =============================================================================================
# 2. Frames: records as tables
# =============================================================================================

def _method(rec: dict[str, Any]) -> str:
    return rec["method"] if "method" in rec else rec["config"]["policy"]


def records_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None,
                  last: int = 1) -> pd.DataFrame:
    """One row per run: method label, seed, mean / worst / tail accuracy (%), budget use.

    ``last = 1``: after the final round (the reported metric); ``last = k``: each client's
    accuracy averaged over the last k evaluations first (a check that the verdict does not hinge
    on where training stops)."""
    label = label or _method
    rows = []
    for r in records:
        acc = np.mean([c["accuracy"] for c in r["curve"][-last:]], axis=0)
        rows.append({"method": label(r), "seed": r["seed"],
                     **{k: 100 * v for k, v in summarize_accuracies(acc).items()},
                     "budget_frac": r["budget_frac"], "seconds": r["seconds"]})
    return pd.DataFrame(rows)


def curves_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """One row per (run, evaluation round): method, seed, round, mean / worst / tail (%)."""
    label = label or _method
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "round": c["round"],
                          **{m: 100 * c[m] for m in ("mean", "worst", "tail")}}
                         for r in records for c in r["curve"]])


def spec_frame(profile: str, name: str = "spec", n_jobs: int = 2, results_dir: Path | None = None,
               n_seeds: int | None = None) -> pd.DataFrame:
    """The specification curve's runs (experiment ``spec``, or ``spec_power``; ``n_seeds`` as in
    :func:`run_experiment`): one row per (specification, method, seed, evaluation round) with the
    mean client accuracy (%); ``final`` marks the last round. Methods are named as in
    :data:`SPEC_METHODS`."""
    records, _ = run_experiment(name, profile, n_jobs, results_dir, n_seeds)
    specs = specifications(profile) if name == "spec" else {"default": {}}
    role = {spec_label(sp, c): (sp, m) for sp in specs for m, c in spec_methods(profile, sp).items()}
    return pd.DataFrame([{"spec": role[r["method"]][0], "method": role[r["method"]][1], "seed": r["seed"],
                          "round": c["round"], "mean": 100 * c["mean"], "final": c is r["curve"][-1]}
                         for r in records for c in r["curve"]])


def clients_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """One row per (run, client): accuracy (%) with its width-w slice and with the full global
    model, width, score, training size."""
    label = label or _method
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "client": c, "accuracy": 100 * a,
                          "accuracy_full_model": 100 * af, "width": w, "score": s, "n_train": n}
                         for r in records for c, a, af, w, s, n in
                         zip(r["clients"], r["accuracy"], r["accuracy_full_model"], r["widths"],
                             r["scores"], r["sizes"])])


def unit_movement_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None
                        ) -> pd.DataFrame:
    """One row per (run, width dimension, unit): how far the unit's input weights moved from their
    initial values (``hasa_core.unit_movement``; the first parameter axis that follows the
    dimension: an LSTM hidden unit's ``w_ih`` rows in all four gates, an embedding column, a
    CNN channel's filter), and the unit's position as a width ``(j + 1) / D``. Records without
    the run extras are skipped."""
    label = label or _method
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
    label = label or _method
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


def test_targets(cfg: RunConfig, seeds: Sequence[int]) -> pd.DataFrame:
    """Each client's number of test targets (n_test) per seed's split: the weights of a
    test-token-weighted mean."""
    return pd.DataFrame([{"seed": s, "client": c.name, "n_test": c.n_test}
                         for s in seeds for c in partition(cfg, s).task().clients])


def summaries_from_clients(cdf: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Per run (method, seed): mean / worst / tail of the per-client column ``value`` (%), e.g.
    ``accuracy_full_model`` to summarise the global model's accuracy instead of the slices'."""
    rows = [{"method": m, "seed": s, **{k: 100 * v for k, v in summarize_accuracies(g[value] / 100).items()}}
            for (m, s), g in cdf.groupby(["method", "seed"], sort=False)]
    return pd.DataFrame(rows)


def describe_clients(task: Task) -> pd.DataFrame:
    """Per client: training examples and targets, test targets, distinct training targets, the
    Jaccard overlap of its target set with the union of the other clients' sets, and (text) the
    share of its test targets that are ``<unk>``."""
    sets = [set(np.flatnonzero(c.label_counts)) for c in task.clients]
    rows = []
    for k, c in enumerate(task.clients):
        others = set().union(*(s for j, s in enumerate(sets) if j != k))
        row = {"client": c.name, "train examples": sum(len(x) for x, _ in c.train),
               "train targets": c.n_train, "test targets": c.n_test, "distinct targets": len(sets[k]),
               "overlap with others": len(sets[k] & others) / len(sets[k] | others)}
        if task.ignore_class is not None:
            row["test <unk> rate"] = sum(int((y == task.ignore_class).sum()) for _, y in c.test) / c.n_test
        rows.append(row)
    return pd.DataFrame(rows).set_index("client")


def allocation_table(task: Task, cfgs: dict[str, RunConfig], seed: int) -> pd.DataFrame:
    """Widths each labelled config's plan gives each client, plus each plan's budget use (spend / B
    under that config's own budget: linear for the published rule, FLOPs for ``*_levels``)."""
    plans = {label: plan(cfg, task, seed) for label, cfg in cfgs.items()}
    df = pd.DataFrame({label: p["widths"] for label, p in plans.items()},
                      index=pd.Index([c.name for c in task.clients], name="client"))
    df.insert(0, "n_train", task.sizes)
    df.loc["budget used / B"] = [np.nan, *(p["budget_frac"] for p in plans.values())]
    return df


def need_for_width(low: Sequence[dict[str, Any]], high: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Measured need for width of each client and seed, in accuracy points:

        need_k = acc_k(every client at the largest width) - acc_k(every client at the smallest),

    from paired runs (same seed) of the two uniform allocations."""
    a = clients_frame(low).set_index(["seed", "client"])["accuracy"]
    b = clients_frame(high).set_index(["seed", "client"])["accuracy"]
    return (b - a).rename("need").reset_index()


def scores_frame(cfg: RunConfig, seeds: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """Every client's score under each named score, per seed (the seed's split), plus n_train.
    Uses the same score generator as :func:`plan` (draw 0)."""
    rows = []
    for seed in seeds:
        task = load_task(cfg, seed)
        vals = {n: compute_scores(n, task, cfg, np.random.default_rng([seed, 2, 0])) for n in names}
        rows += [{"seed": seed, "client": c.name, "n_train": c.n_train, **{n: float(v[k]) for n, v in vals.items()}}
                 for k, c in enumerate(task.clients)]
    return pd.DataFrame(rows)


# =============================================================================================
# 3. Statistics: paired tests over seeds, Holm families, power
# =============================================================================================

def power_paired_t(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test (n pairs, level alpha) to detect a true mean difference
    ``effect`` when the differences have standard deviation ``sd`` (noncentral t)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) / (sd / math.sqrt(n))
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    return power if math.isfinite(power) else float(nc > crit)  # scipy's nct fails far in the tail


def min_detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true mean difference the paired t-test detects with ``power`` (n pairs, sd of the
    differences), by root-finding on :func:`power_paired_t`."""
    if n < 2 or not sd > 0:
        return float("nan")
    from scipy.optimize import brentq
    return float(brentq(lambda e: power_paired_t(e, sd, n, alpha) - power, 1e-9 * sd, 50 * sd))


def seeds_for_power(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, n_max: int = 10_000) -> int:
    """Fewest seeds (pairs) for which the paired t-test reaches ``power`` at ``effect``."""
    n = 2
    while n < n_max and power_paired_t(effect, sd, n, alpha) < power:
        n += 1
    return n


def paired_stats(a: Sequence[float], b: Sequence[float], effect: float | None = None) -> dict[str, float]:
    """Paired comparison of ``a`` against ``b`` (same seeds, same order): d = a - b.

    Returns the mean difference with its t-based 95% CI (mean +- t_{n-1, .975} sd / sqrt(n): right
    for small n, unlike a percentile bootstrap), the paired t-test p-value, the Wilcoxon
    signed-rank p-value (zero differences dropped), Cohen's d_z = mean(d) / sd(d), wins = #(d > 0),
    the minimum detectable effect at 80% power (``mde80``) and, if ``effect`` is given, the power
    to detect that true difference. p-values are per comparison: adjust within a named family
    (:func:`compare_family`) before calling any one significant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if np.allclose(d, 0):
        p_t = p_w = 1.0
        ci = (0.0, 0.0)
    else:
        p_t = float(stats.ttest_rel(a, b).pvalue)
        p_w = float(stats.wilcoxon(a, b).pvalue)
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        ci = (float(d.mean() - half), float(d.mean() + half))
    out = {"diff": float(d.mean()), "ci_low": ci[0], "ci_high": ci[1], "p_t": p_t,
           "p_wilcoxon": p_w, "d_z": float(d.mean() / sd) if sd and sd > 0 else float("nan"),
           "wins": int(np.sum(d > 0)), "n": n, "sd_diff": sd, "mde80": min_detectable_effect(sd, n)}
    if effect is not None:
        out["power_at_effect"] = power_paired_t(effect, sd, n)
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control over m comparisons)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def _flips(n: int, draws: int = 20_000, seed: int = 0) -> np.ndarray:
    """Sign vectors over n seeds: all 2^n when n <= 16, else the identity plus ``draws`` random ones."""
    if n <= 16:
        return 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    rng = np.random.default_rng(seed)
    return np.vstack([np.ones(n, int), rng.choice([-1, 1], size=(draws, n))])


def sign_flip_p(d: Sequence[float], alternative: str = "two-sided") -> float:
    """Sign-flip (paired permutation) p-value of the mean of differences d: the share of sign
    vectors s with mean(s d) >= mean(d) (``greater``), or |mean(s d)| >= |mean(d)| (two-sided).
    Exact over all 2^n vectors for n <= 16; constant positive d gives 1/2^n and 2/2^n."""
    d = np.asarray(d, float)
    null = _flips(len(d)) @ d / len(d)
    tol = 1e-12 * max(1.0, abs(d.mean()))
    if alternative == "greater":
        return float(np.mean(null >= d.mean() - tol))
    return float(np.mean(np.abs(null) >= abs(d.mean()) - tol))


def _flipped_stats(diffs: np.ndarray, flips: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Per sign vector: the mean difference of every specification, and the number of
    specifications significantly above and below zero (paired t, two-sided ``alpha``)."""
    n = diffs.shape[0]
    means = flips @ diffs / n                                   # (flips, specs)
    var = np.maximum((np.sum(diffs ** 2, axis=0) - n * means ** 2) / (n - 1), 0)  # sum d^2 is flip-invariant
    with np.errstate(divide="ignore", invalid="ignore"):
        t = means / np.sqrt(var / n)
    p = 2 * stats.t.sf(np.abs(np.nan_to_num(t, nan=0.0, posinf=np.inf)), n - 1)
    return means, ((p < alpha) & (means > 0)).sum(axis=1), ((p < alpha) & (means < 0)).sum(axis=1)


def joint_sign_flip(diffs: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """Joint inference over a specification curve (Simonsohn, Simmons & Nelson 2020) by sign
    flips over seeds: ``diffs`` is (seeds x specifications) of paired differences, the seeds
    shared by every specification, so one sign vector flips a seed in every specification at
    once (the null: no method effect in any specification, differences symmetric about 0).

    Returns the observed median effect across specifications and the numbers significant above
    and below zero (paired t, two-sided ``alpha``), each with its sign-flip p-value: the share of
    sign vectors whose |median| is at least as large, or that give at least as many significant
    specifications in that direction; and the numbers of significant specifications chance alone
    gives on average."""
    diffs = np.asarray(diffs, float)
    flips = _flips(diffs.shape[0])
    means, pos, neg = _flipped_stats(diffs, flips, alpha)
    obs_means, obs_pos, obs_neg = _flipped_stats(diffs, np.ones((1, diffs.shape[0]), int), alpha)
    med, null_med = float(np.median(obs_means)), np.median(means, axis=1)
    return {"specifications": diffs.shape[1], "seeds": diffs.shape[0], "sign_vectors": len(flips),
            "median": med, "p_median": float(np.mean(np.abs(null_med) >= abs(med) - 1e-12)),
            "significant_positive": int(obs_pos[0]), "p_positive": float(np.mean(pos >= obs_pos[0])),
            "significant_negative": int(obs_neg[0]), "p_negative": float(np.mean(neg >= obs_neg[0])),
            "chance_positive": float(pos.mean()), "chance_negative": float(neg.mean())}


def dilution_association(eff: pd.DataFrame, dim: str, control: str = "uniform", n_resamples: int = 9999
                         ) -> dict[str, float]:
    """Across (method, client) pairs of every method but ``control``: the Spearman correlation
    between a client's mean effective trained width (dimension ``dim``) and its mean accuracy
    difference against ``control`` (pp, seeds matched), with a permutation p-value (scipy,
    seeded; the pairs are the unit)."""
    e = eff[eff["dim"] == dim]
    acc = e.pivot_table(index=["client", "seed"], columns="method", values="accuracy")
    diff = acc.drop(columns=control).sub(acc[control], axis=0).groupby("client").mean().stack()
    width = e[e["method"] != control].groupby(["client", "method"])["effective_width"].mean()
    x = width.reindex(diff.index).to_numpy()
    y = diff.to_numpy()
    res = stats.permutation_test((x,), lambda v: stats.spearmanr(v, y).statistic, permutation_type="pairings",
                                 n_resamples=n_resamples, random_state=0)
    return {"pairs": len(x), "spearman": float(res.statistic), "p_perm": float(res.pvalue)}


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
        rows.append({"method": _method(r), "seed": r["seed"], "dilution_index": float(ratio)})
    return pd.DataFrame(rows)


def spec_dilution(profile: str, n_jobs: int = 2, results_dir: Path | None = None,
                  n_seeds: int | None = None) -> pd.DataFrame:
    """Per specification and protocol, over the specification curve's seeds: the mean
    :func:`dilution_index` of HASA's runs, and the mean share of HASA's clients' evaluation slices
    that is trained (``trained_share`` of :func:`effective_widths`, LSTM hidden units, against the
    same specification's uniform run; ``n_seeds`` as in :func:`run_experiment`)."""
    records, _ = run_experiment("spec", profile, n_jobs, results_dir, n_seeds)
    role = {spec_label(sp, c): (sp, m) for sp in specifications(profile) for m, c in spec_methods(profile, sp).items()}
    protocol = {m: p for p, m in PROTOCOLS.items()}
    d = dilution_index(records)
    d[["spec", "role"]] = [role[m] for m in d["method"]]
    d = d[d["role"].isin(protocol)].assign(protocol=lambda f: f["role"].map(protocol))
    out = d.groupby(["spec", "protocol"], sort=False)["dilution_index"].mean().reset_index()
    shares = []
    for spec in out["spec"].unique():
        mine = [r for r in records if role[r["method"]][0] == spec]
        eff = effective_widths(mine, label=lambda r: role[r["method"]][1])
        eff = eff[(eff["dim"] == "hid") & eff["method"].isin(protocol)]
        shares += [{"spec": spec, "protocol": protocol[m], "trained_share": float(g["trained_share"].mean())}
                   for m, g in eff.groupby("method")]
    return out.merge(pd.DataFrame(shares), on=["spec", "protocol"])


def dilution_across_specs(dilution: pd.DataFrame, table: pd.DataFrame, predictor: str = "dilution_index",
                          n_resamples: int = 9999) -> pd.DataFrame:
    """Per protocol, across specifications: the Spearman correlation between a column of
    :func:`spec_dilution` (``predictor``: HASA's mean dilution index or trained share) and HASA's
    HASA − uniform difference (pp), with a permutation p (scipy, seeded)."""
    t = table[table["family"].str.startswith("Specification curve")].merge(dilution, on=["spec", "protocol"])
    rows = []
    for protocol, g in t.groupby("protocol", sort=False):
        x, y = g[predictor].to_numpy(), g["diff pp"].to_numpy()
        res = stats.permutation_test((x,), lambda v: stats.spearmanr(v, y).statistic,
                                     permutation_type="pairings", n_resamples=n_resamples, random_state=0)
        rows.append({"protocol": protocol, "predictor": predictor, "specifications": len(g),
                     "spearman": float(res.statistic), "p_perm": float(res.pvalue), "median": float(np.median(x))})
    return pd.DataFrame(rows)


def dilution_across_sentence(across: pd.DataFrame) -> str:
    """Whether, across the specification curve, the dilution predicts HASA − uniform, per protocol
    and predictor (:func:`dilution_across_specs`), in one generated sentence."""
    names = {"dilution_index": "dilution index", "trained_share": "trained share of the clients' slices"}
    parts = [f"{names.get(r['predictor'], r['predictor'])} under `{r['protocol']}`: Spearman ρ = {r['spearman']:+.2f} "
             f"(permutation p = {r['p_perm']:.3g}, {int(r['specifications'])} setups)" for _, r in across.iterrows()]
    hit = across[across["p_perm"] < 0.05]
    verdict = ("so across the setups the dilution does predict where HASA does better or worse"
               if len(hit) else "so across these setups the dilution does not detectably predict where HASA does "
               "better or worse (few setups: a weak association would go unseen)")
    return "**Across setups**, HASA − uniform against the " + "; ".join(parts) + f": {verdict}."


def narrower_evaluation(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None,
                        control: str = "uniform") -> pd.DataFrame:
    """The test of the dilution explanation: each client evaluated with the nested slice of width
    min(w_k, B) (``accuracy_capped``) instead of its allocated w_k, after the same training. Per
    method, paired by seed on the mean client accuracy (pp): capped − allocated (the recovery),
    and capped − ``control``, as ONE Holm family, "Narrower evaluation"."""
    label = label or _method
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
    trained-width accuracy in %; the paired tests on the mean client accuracy, per method:
    trained − allocated (the recovery) and trained − ``control`` allocated, as ONE Holm family,
    "Trained-width evaluation")."""
    label = label or _method
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
    tests = []
    for m in [m for m in dict.fromkeys(per_client["method"]) if m != control]:
        mine = mean.loc[m]
        at = {"eval_width_median": float(per_client.loc[per_client["method"] == m, "eval_width"].median())}
        tests.append({"comparison": f"{m}: trained − allocated", "metric": "mean",
                      **paired_stats(mine["trained"], mine["allocated"]), **at})
        tests.append({"comparison": f"{m} trained − {control}", "metric": "mean",
                      **paired_stats(mine["trained"], mean.loc[control, "allocated"].reindex(mine.index)), **at})
    tests = pd.DataFrame(tests)
    tests["family"] = "Trained-width evaluation"
    tests["p_holm"] = holm(tests["p_t"])
    return per_client, tests


def accuracy_sweep_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None
                         ) -> pd.DataFrame:
    """One row per (run, client, grid width) of each record's ``accuracy_sweep``: the accuracy (%)
    of the trained model cut to that width, and the client's allocated width."""
    label = label or _method
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "client": c, "width": w, "eval_width": g,
                          "accuracy": 100 * a}
                         for r in records if "accuracy_sweep" in r
                         for c, w, accs in zip(r["clients"], r["widths"], r["accuracy_sweep"]["accuracy"])
                         for g, a in zip(r["accuracy_sweep"]["grid"], accs)])


def compare_family(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], family: str,
                   metrics: Sequence[str] = ("mean", "worst", "tail"),
                   effect: float | None = None) -> pd.DataFrame:
    """The paired statistics (:func:`paired_stats`) of every (treatment, control) pair on every
    metric, seeds matched, as ONE named Holm family: ``p_holm`` adjusts the t-test p-values over
    all rows of this table and nowhere else, and ``family`` names it, so an adjusted p quoted in
    prose can be traced to its family. ``verdict`` reads the adjusted p together with the power:
    'supported' (p_holm < 0.05, HASA-side positive), 'contradicted' (p_holm < 0.05, negative), or
    'neither confirmed nor refuted' (with the minimum detectable effect)."""
    wide = {m: df.pivot(index="seed", columns="method", values=m) for m in metrics}
    rows = []
    for treatment, control in pairs:
        for m in metrics:
            w = wide[m][[treatment, control]].dropna()
            rows.append({"family": family, "comparison": f"{treatment} − {control}", "metric": m,
                         **paired_stats(w[treatment], w[control], effect)})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_t"])
    out["verdict"] = [("higher" if r.diff > 0 else "lower") + f" (Holm p = {r.p_holm:.3g})" if r.p_holm < 0.05
                      else f"neither confirmed nor refuted (Holm p = {r.p_holm:.2g}; MDE80 = {r.mde80:.2f})"
                      for r in out.itertuples()]
    return out


def per_client_differences(cdf: pd.DataFrame, treatment: str, control: str, family: str,
                           value: str = "accuracy") -> pd.DataFrame:
    """Per client, the paired (seed-matched) difference of ``value`` between two methods, with
    :func:`paired_stats` and a Holm adjustment over the clients (one named family); also the
    clients' mean training size and both methods' mean widths. Rows ordered by client size."""
    wide = cdf.pivot_table(index=["client", "seed"], columns="method", values=[value, "width", "n_train"])
    rows = []
    for client, g in wide.groupby(level="client"):
        rows.append({"family": family, "client": client, "n_train": g["n_train"][control].mean(),
                     f"width {control}": g["width"][control].mean(), f"width {treatment}": g["width"][treatment].mean(),
                     **paired_stats(g[value][treatment], g[value][control])})
    out = pd.DataFrame(rows).sort_values("n_train", ascending=False)
    out["p_holm"] = holm(out["p_t"])
    return out.set_index("client")


def mean_variants(cdf: pd.DataFrame, n_test: pd.DataFrame, treatment: str, control: str) -> pd.DataFrame:
    """The paired difference of the client-mean accuracy computed three ways: unweighted (the
    paper's metric), weighted by each client's test targets, and leaving out one client at a time
    (one row per client left out): is the verdict carried by one client?"""
    df = cdf.merge(n_test, on=["seed", "client"])
    rows = []

    def diff(frame, weights=None):
        per = frame.groupby(["method", "seed"]).apply(
            lambda g: np.average(g["accuracy"], weights=None if weights is None else g[weights]),
            include_groups=False).unstack("method")
        return paired_stats(per[treatment], per[control])
    rows.append({"mean over": "all clients, unweighted", **diff(df)})
    rows.append({"mean over": "all clients, weighted by test targets", **diff(df, "n_test")})
    for client in df["client"].unique():
        rows.append({"mean over": f"without {client}", **diff(df[df["client"] != client])})
    return pd.DataFrame(rows).set_index("mean over")


def gap_by_round(curves: pd.DataFrame, treatment: str, control: str, metric: str = "mean") -> pd.DataFrame:
    """The paired gap ``treatment - control`` of ``metric`` at every evaluation round."""
    rows = []
    for rnd, g in curves.groupby("round"):
        w = g.pivot(index="seed", columns="method", values=metric)[[treatment, control]].dropna()
        rows.append({"round": rnd, **paired_stats(w[treatment], w[control])})
    return pd.DataFrame(rows).set_index("round")


def summary_table(df: pd.DataFrame, metrics: Sequence[str] = ("mean", "worst", "tail")) -> pd.DataFrame:
    """mean +- std over seeds of each metric, per method (methods in order of appearance)."""
    g = df.groupby("method", sort=False)
    out = pd.DataFrame({f"{m}": g[m].mean().map("{:.2f}".format) + " ± " + g[m].std().map("{:.2f}".format)
                        for m in metrics})
    out["seeds"] = g.size()
    if "budget_frac" in df:
        out["budget used"] = g["budget_frac"].mean().map("{:.3f}".format)
    return out


def _row_ranks_z(x: np.ndarray) -> np.ndarray:
    """Row-wise average ranks, standardised (mean 0, population sd 1); constant rows become NaN."""
    r = stats.rankdata(x, axis=1)
    sd = r.std(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, (r - r.mean(axis=1, keepdims=True)) / sd, np.nan)


def _mean_finite(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none (e.g. equal sizes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def score_validity(scores: pd.DataFrame, need: pd.DataFrame, names: Sequence[str],
                   n_perm: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per score: does it rank clients by their measured need for width?

    ``rho_need``: Spearman rho between score and need across clients, within each seed, averaged
    over seeds. ``p_perm``: its two-sided permutation p-value with the CLIENTS as the random unit
    (the need values are permuted across clients, the same permutation in every seed; exact over
    all K! permutations when K! <= n_perm), so the p-value does not treat the K clients as fixed.
    Also how much of the score client size explains: mean within-seed Spearman rho with n_train,
    and R^2 of a linear fit of the score on log n_train."""
    df = scores.merge(need, on=["seed", "client"])
    clients = list(dict.fromkeys(df["client"]))
    k = len(clients)
    if math.factorial(k) <= n_perm:
        perms = np.array(list(itertools.permutations(range(k))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.vstack([np.arange(k), *(rng.permutation(k) for _ in range(n_perm - 1))])
    z_need = _row_ranks_z(df.pivot(index="seed", columns="client", values="need")[clients].to_numpy())
    size = df.pivot(index="seed", columns="client", values="n_train")[clients].to_numpy()
    rows = []
    for name in names:
        sc = df.pivot(index="seed", columns="client", values=name)[clients].to_numpy()
        z = _row_ranks_z(sc)
        ok = ~np.isnan(z).any(1) & ~np.isnan(z_need).any(1)
        if not ok.any():
            rows.append({"score": name, "rho_need": np.nan, "p_perm": np.nan, "seeds": 0})
            continue
        rho = np.einsum("sk,spk->sp", z[ok], z_need[ok][:, perms]) / k  # seeds x permutations
        stat = rho.mean(0)
        z_size = _row_ranks_z(size[ok])
        r2 = [stats.linregress(np.log(s), v).rvalue ** 2 if np.ptp(s) > 0 and np.ptp(v) > 0 else np.nan
              for s, v in zip(size[ok], sc[ok])]
        rho_size = (z[ok] * z_size).mean(1)
        rows.append({"score": name, "rho_need": float(stat[0]),
                     "p_perm": float(np.mean(np.abs(stat) >= abs(stat[0]) - 1e-12)),
                     "rho_size": _mean_finite(rho_size), "r2_logsize": _mean_finite(r2),
                     "seeds": int(ok.sum()), "clients": k, "permutations": len(perms)})
    return pd.DataFrame(rows).set_index("score")


# =============================================================================================
# 4. Tables and figures
# =============================================================================================

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


def table_markdown(df: pd.DataFrame) -> str:
    """A table as flat Markdown (a multi-index becomes columns, multi-level columns are joined)."""
    keep_index = not isinstance(df.index, pd.MultiIndex)
    flat = df if keep_index else df.reset_index()
    if isinstance(flat.columns, pd.MultiIndex):
        flat = flat.set_axis([" · ".join(map(str, c)) for c in flat.columns], axis=1)
    return flat.to_markdown(floatfmt=".4g", index=keep_index) + "\n"


# A notebook's outputs appear together, and only when the whole notebook succeeded. `make reproduce`
# runs each notebook with HASA_STAGE naming a fresh staging folder: save_table and save_figure then
# write there (at the same path relative to the repository, see `staged`), readers of a table look
# there first (`current`), and only after the notebook succeeded does `publish` move every staged
# file into place. A notebook that fails half-way leaves results/ and figures/ as they were.
# Without HASA_STAGE (nbval, a notebook opened in Jupyter) outputs are written in place.

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
    Refuses any folder not named ``.stage-*``: a mistyped argument cannot move or remove anything else."""
    stage, root = Path(stage), root or REPO
    if not stage.name.startswith(".stage-"):
        raise ValueError(f"{stage} is not a staging folder (a folder named .stage-*)")
    published = []
    if not stage.exists():
        return published
    for f in sorted(p for p in stage.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")):
        target = root / f.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)
        published.append(target)
    shutil.rmtree(stage)
    return published


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


def headline_table(results_dir: Path | None = None) -> pd.DataFrame:
    """One row per claim of the paper, from the paired-test tables the notebooks wrote: the paired
    difference with its CI, the paper's value where it gives a number, the named Holm family and
    its adjusted p, n seeds, power / MDE, and a verdict relative to the direction the paper claims
    ('supported', 'contradicted', or 'neither confirmed nor refuted'). Reads each table's staged
    copy when the running notebook wrote one (:func:`current`)."""
    root = results_dir or DEFAULT_RESULTS_DIR

    def row(table: str, comparison: str, metric: str, claim: str, sign: int, paper: float = float("nan")):
        t = pd.read_csv(current(root / f"{table}.csv")).set_index(["comparison", "metric"])
        r = t.loc[(comparison, metric)]
        if r["p_holm"] < 0.05:
            verdict = "supported" if np.sign(r["diff"]) == sign else "contradicted"
        else:
            verdict = f"neither confirmed nor refuted (MDE80 {r['mde80']:.2f} pp)"
        return {"claim": claim, "diff": r["diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "paper": paper,
                "family": r["family"], "p_holm": r["p_holm"], "n": int(r["n"]),
                "power_at_effect": r.get("power_at_effect", float("nan")), "mde80": r["mde80"], "verdict": verdict,
                "note": f"Holm p {r['p_holm']:.2g} ({r['family']}), n={int(r['n'])}: {verdict.split(' (')[0]}"}

    t2 = pd.read_csv(current(root / "table2_paired_tests.csv"))
    strongest = {m: t2[t2["metric"] == m].sort_values("diff")["comparison"].iloc[0] for m in ("worst", "tail")}
    rows = [
        row("table1_paired_tests", "hasa − uniform", "mean", "1. mean: hasa − uniform (paper-matched seeds)", +1,
            PAPER_GAIN),
        row("table1_core_tests", "hasa − uniform", "mean", "1. mean: hasa − uniform (powered)", +1, PAPER_GAIN),
        row("table1_core_tests", "hasa − uniform", "worst", "1. worst client: hasa − uniform (powered)", +1),
        row("table2_paired_tests", strongest["worst"], "worst", f"2. worst: {strongest['worst']}", +1),
        row("table2_paired_tests", strongest["tail"], "tail", f"2. tail: {strongest['tail']}", +1),
        row("table1_core_tests", "reverse − uniform", "mean", "3. mean: reverse − uniform (powered)", -1),
        row("table3_paired_tests", "reverse − uniform", "tail", "3. tail: reverse − uniform", -1),
        row("table4_paired_tests", "hasa − uniform", "worst", "4. digits worst: hasa(labels) − uniform", +1),
        row("table4_paired_tests", "hasa[feature_js] − uniform", "worst",
            "4. digits worst: hasa[feature_js] − uniform", +1),
    ]
    if current(root / "spec_curve_joint.csv").is_file():
        rows += spec_curve_headline_rows(pd.read_csv(current(root / "spec_curve.csv")),
                                         pd.read_csv(current(root / "spec_curve_joint.csv")))
    return pd.DataFrame(rows)


def spec_curve_headline_rows(table: pd.DataFrame, joint: pd.DataFrame, planned: int = SEEDS["paper"]
                             ) -> list[dict[str, Any]]:
    """The robustness rows of the headline table: claim 1 at power under the ``selective`` protocol
    in the default setup (family "Claim 1 at power"; ``full`` at power is the Core row already),
    and per protocol the median effect across the specification curve with its joint sign-flip p
    (no CI: the median of the specifications' estimates), labelled interim while the curve has
    fewer seeds than ``planned``."""
    rows = []
    for j in joint.itertuples():
        power = table[(table["family"] == "Claim 1 at power") & (table["protocol"] == j.protocol)].iloc[0]
        interim = f" (interim: {j.seeds} of {planned} seeds)" if j.seeds < planned else ""
        cases = [(f"1. robustness: median {j.comparison} over {j.specifications} setups{interim}", j.median,
                  np.nan, np.nan, j.p_median, f"Specification curve ({j.protocol}), joint sign-flip", j.seeds, np.nan)]
        if j.protocol != "full":
            cases.insert(0, (f"1. mean: {j.comparison} (powered, `{j.protocol}`)", power["diff pp"], power["ci_low"],
                             power["ci_high"], power["p_holm"], "Claim 1 at power", power["n"], power["mde80"]))
        for label, diff, lo, hi, p, family, n, mde in cases:
            verdict = ("supported" if diff > 0 else "contradicted") if p < 0.05 else "neither confirmed nor refuted"
            rows.append({"claim": label, "diff": diff, "ci_low": lo, "ci_high": hi, "paper": PAPER_GAIN,
                         "family": family, "p_holm": p, "n": int(n), "power_at_effect": np.nan, "mde80": mde,
                         "verdict": verdict, "note": f"p {p:.2g} ({family}), n={int(n)}: {verdict}"})
    return rows


PROTOCOLS = {"full": "hasa", "selective": "hasa·sel"}  # aggregation protocol -> its HASA method vs uniform


def calibrated_round(frame: pd.DataFrame, target: float = PAPER_ACCURACY["uniform"]) -> int:
    """The evaluation round at which the uniform runs' mean accuracy, averaged over seeds, is
    nearest ``target`` (%): chosen from the uniform curve only, never from HASA's."""
    u = frame[frame["method"] == "uniform"].groupby("round")["mean"].mean()
    return int((u - target).abs().idxmin())


def _spec_rows(frame: pd.DataFrame, target: float) -> list[dict[str, Any]]:
    rows = []
    for spec, f in frame.groupby("spec", sort=False):
        r_cal = calibrated_round(f, target)
        final = f[f["final"]].pivot(index="seed", columns="method", values="mean")
        at = f[f["round"] == r_cal].pivot(index="seed", columns="method", values="mean")
        for protocol, method in PROTOCOLS.items():
            st, cal = paired_stats(final[method], final["uniform"]), paired_stats(at[method], at["uniform"])
            rows.append({"spec": spec, "protocol": protocol, "comparison": f"{method} − uniform", "n": st["n"],
                         "rounds": int(f["round"].max()), "uniform %": final["uniform"].mean(),
                         "diff pp": st["diff"], "ci_low": st["ci_low"], "ci_high": st["ci_high"],
                         "p_t": st["p_t"], "mde80": st["mde80"], "calibrated round": r_cal,
                         "uniform % at calibrated": at["uniform"].mean(), "calibrated diff pp": cal["diff"],
                         "calibrated p_t": cal["p_t"]})
    return rows


def spec_curve_table(curve: pd.DataFrame, power: pd.DataFrame | None = None,
                     target: float = PAPER_ACCURACY["uniform"]) -> pd.DataFrame:
    """The specification curve: one row per (specification, protocol) with the uniform mean, the
    paired HASA − uniform difference after the last round (t-based 95 % CI, p) and at the
    :func:`calibrated_round`. ``p_holm`` adjusts within one family per protocol, named in
    ``family`` ("Specification curve (full)" / "(selective)"). Rows of ``power`` (the default
    setup over the powered seeds) form their own family, "Claim 1 at power"."""
    out = pd.DataFrame(_spec_rows(curve, target))
    out["family"] = [f"Specification curve ({p})" for p in out["protocol"]]
    if power is not None:
        extra = pd.DataFrame(_spec_rows(power, target)).assign(family="Claim 1 at power")
        extra["spec"] = [f"default, {n} seeds" for n in extra["n"]]
        out = pd.concat([out, extra], ignore_index=True)
    out["p_holm"] = out.groupby("family")["p_t"].transform(lambda p: holm(p.to_numpy()))
    return out


def spec_joint_table(curve: pd.DataFrame) -> pd.DataFrame:
    """:func:`joint_sign_flip` per protocol over every specification of ``curve`` (final round),
    with the specifications whose 95 % CI holds the paper's HASA − uniform gain."""
    rows = []
    table = pd.DataFrame(_spec_rows(curve, PAPER_ACCURACY["uniform"]))
    for protocol, method in PROTOCOLS.items():
        final = curve[curve["final"]]
        wide = {m: final[final["method"] == m].pivot(index="seed", columns="spec", values="mean")
                for m in (method, "uniform")}
        diffs = (wide[method] - wide["uniform"]).dropna()
        t = table[table["protocol"] == protocol]
        holds = t[(t["ci_low"] <= PAPER_GAIN) & (PAPER_GAIN <= t["ci_high"])]["spec"].tolist()
        rows.append({"protocol": protocol, "comparison": f"{method} − uniform", **joint_sign_flip(diffs.to_numpy()),
                     "calibrated_median": float(t["calibrated diff pp"].median()),
                     "paper_gain_inside_ci_of": ", ".join(holds) or "none"})
    return pd.DataFrame(rows)


OFFICIAL = {  # baseline -> (repository, file, commit) of the official implementation we compared with
    "HeteroFL": ("diaoenmao/HeteroFL-Computation-and-Communication-Efficient-Federated-Learning-for-Heterogeneous-"
                 "Clients", "src/fed.py, src/modules/modules.py", "311c889"),
    "FedRolex": ("AIoT-MLSys-Lab/FedRolex", "resnet_server.py, transformer_server.py", "704079d"),
    "Federated Dropout": ("no public code by its authors", "Caldas et al. 2018 (arXiv 1812.07210), Sec. 3", "—"),
    "FjORD": ("adap/flower (baseline by FjORD's authors)", "baselines/fjord/fjord/od/samplers/fixed_od.py, "
              "strategy.py", "24ea028"),
    "HASA": ("nclabteam/FedProC (public re-implementation)", "strategies/HASA.py", "90efd91"),
}
AS_PUBLISHED_PAIRS = {"HeteroFL": ("uniform·as published", "uniform", "hasa·sel·as published", "hasa·sel"),
                      "FedRolex": ("uniform·FedRolex·as published", "uniform·FedRolex",
                                   "hasa·FedRolex·sel·as published", "hasa·FedRolex·sel")}


def official_effects(df: pd.DataFrame) -> pd.DataFrame:
    """What the official aggregation (:data:`AS_PUBLISHED`) changes, measured: per baseline and
    allocation, the paired (seed-matched) difference as published − ours on mean and worst-client
    accuracy (pp). Empty where the as-published rows are not in ``df``."""
    rows = []
    for baseline, (pu, u, ph, h) in AS_PUBLISHED_PAIRS.items():
        for published, ours in ((pu, u), (ph, h)):
            if published in set(df["method"]) and ours in set(df["method"]):
                for m in ("mean", "worst"):
                    w = df.pivot(index="seed", columns="method", values=m)[[published, ours]].dropna()
                    rows.append({"baseline": baseline, "comparison": f"{published} − {ours}", "metric": m,
                                 **paired_stats(w[published], w[ours])})
    return pd.DataFrame(rows)


def fidelity_table(effects: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every baseline against its official implementation: aspect | official (repository, file,
    commit) | ours | what it changes, measured | status (same, fixed, option, immaterial, open).
    The measured column is filled from :func:`official_effects` where those runs exist."""
    def measured(baseline: str) -> str:
        if effects is None or effects.empty or baseline not in set(effects["baseline"]):
            return "not measured yet: the 'as published' Table 2 rows are not in this run"
        e = effects[(effects["baseline"] == baseline) & (effects["metric"] == "mean")]
        return "; ".join(f"{r.comparison}: mean {r.diff:+.2f} pp [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
                         for r in e.itertuples())
    rows = [
        ("HeteroFL", "width slices", "static prefix slices, ceil(w D) units", "the same", "nothing", "same"),
        ("HeteroFL", "recurrent layers", "no LSTM in the official code", "a hidden unit keeps its rows in all four "
         "gates (FedProC's recurrent adapter)", "nothing measurable (no reference)", "adapted"),
        ("HeteroFL", "aggregation weights", "each client counted once per element (count += 1)",
         "n_k by default; weighting='count' as an option", measured("HeteroFL"), "option"),
        ("HeteroFL", "row masking (label_split, mask: 1)", "output and embedding rows averaged over the clients "
         "holding them; absent classes' logits 0 in training", "off by default; row_masking=True as an option",
         "with the weighting above (the 'as published' rows)", "option"),
        ("HeteroFL", "Scaler (activations / width in training)", "on", "absent (our CNN and LSTM)",
         "not measured", "open"),
        ("HeteroFL", "normalisation", "static batch norm", "none (our CNN trains without it)", "nothing", "immaterial"),
        ("FedRolex", "rolling direction", "backward: torch.roll, window start -r mod D", "forward (the paper's "
         "formula)", "each unit's training count over a run is the same both ways", "immaterial"),
        ("FedRolex", "aggregation weights and row masking", "as HeteroFL's", "options as for HeteroFL",
         measured("FedRolex"), "option"),
        ("Federated Dropout", "which units", "a fresh random subset per round (paper)", "the same, per client and "
         "round from its generator", "nothing", "our reading"),
        ("FjORD", "width drawn per batch", "uniform over the levels <= the client's maximum width",
         "uniform over the levels below w and w itself", "the budget counts what the clients train (a width off "
         "the levels used to be counted but never trained)", "fixed"),
        ("FjORD", "aggregation weights", "n_k", "n_k", "nothing", "same"),
        ("FjORD", "nested sub-slice", "a prefix of each layer", "the same prefix, by views (bit-identical to a "
         "gather)", "nothing", "same"),
        ("HASA", "allocation", "Eqs. 11-17 (JS score, rank, budget with w_min, w_max, cap)", "the same",
         "nothing (tested against hand-computed cases)", "same"),
        ("HASA", "aggregation", "FedAvg with untrained entries at the broadcast value", "`full`, the same; "
         "`selective` is ours, for the matched baselines", "both are reported", "same / labelled"),
    ]
    out = pd.DataFrame(rows, columns=["baseline", "aspect", "official", "ours", "what it changes, measured",
                                      "status"])
    out.insert(2, "official implementation", [" · ".join(OFFICIAL[b]) for b in out["baseline"]])
    return out


def _cpu_seconds(rec: dict[str, Any]) -> float:
    """A run's CPU seconds (single-threaded, so unaffected by other load): ``cpu_seconds`` where the
    record has it, else its wall seconds (older records, made on an otherwise idle machine)."""
    return rec.get("cpu_seconds", rec["seconds"])


def runtime_table(profile: str, results_dir: Path | None = None) -> pd.DataFrame:
    """Per experiment: distinct runs, mean and total single-thread CPU seconds of the runs (from
    the cached records, so it describes the machine that made them), and the processor."""
    rows, seen = [], set()
    for name, (methods, seeds) in experiments(profile).items():
        recs = [cached_record(c, s, results_dir or output_dirs(profile)[0]) for c in methods.values() for s in seeds]
        recs = [r for r in recs if r is not None]
        new = [r for r in recs if (json.dumps(r["config"], sort_keys=True), r["seed"]) not in seen]
        seen |= {(json.dumps(r["config"], sort_keys=True), r["seed"]) for r in recs}
        secs = [_cpu_seconds(r) for r in recs]
        rows.append({"experiment": name, "runs": len(recs), "runs not shared with an earlier experiment": len(new),
                     "mean s per run": float(np.mean(secs)) if secs else np.nan,
                     "CPU minutes (new runs)": sum(_cpu_seconds(r) for r in new) / 60,
                     "processor": ", ".join(sorted({r["provenance"]["cpu"] for r in recs}))})
    out = pd.DataFrame(rows).set_index("experiment")
    out.loc["total"] = [out["runs"].sum(), out["runs not shared with an earlier experiment"].sum(), np.nan,
                        out["CPU minutes (new runs)"].sum(), ""]
    return out


def plot_paired(df: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                metrics: Sequence[str] = ("mean", "worst", "tail"), seeds_note: str = ""):
    """Paired view, one panel per metric and one row per (treatment, control) pair: each seed's
    difference (dots) with the mean and its t-based 95% CI (black), in accuracy points."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 1.3 + 0.5 * len(pairs)),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        wide = df.pivot(index="seed", columns="method", values=m)
        for y, (t, c) in enumerate(pairs):
            d = (wide[t] - wide[c]).dropna()
            st = paired_stats(d, np.zeros(len(d)))
            ax.scatter(d, y + np.linspace(-0.2, 0.2, len(d)), s=9, alpha=0.5)
            ax.errorbar(st["diff"], y, xerr=[[st["diff"] - st["ci_low"]], [st["ci_high"] - st["diff"]]],
                        fmt="D", color="black", capsize=4, ms=5)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(pairs)), [f"{t} − {c}" for t, c in pairs], fontsize=8)
        ax.set_ylim(len(pairs) - 0.4, -0.6)
        ax.set_title(f"{m} accuracy (pp)", fontsize=9)
    if seeds_note:
        fig.suptitle(seeds_note, fontsize=8)
    fig.tight_layout()
    return fig


def plot_headline(rows: pd.DataFrame):
    """The README's headline: one row per claim, the paired difference (pp) with its 95% CI,
    the paper's value (red x) where the paper gives one, and the adjusted p and power as text.
    ``rows`` has columns claim, diff, ci_low, ci_high, paper, note."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(rows) + 1.2))
    fig.subplots_adjust(left=0.3, right=0.68)
    for y, r in enumerate(rows.itertuples()):
        ax.errorbar(r.diff, y, xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="D", color="black", capsize=4)
        if pd.notna(r.paper):
            ax.plot(r.paper, y, "x", color="tab:red", ms=9, mew=2, label="paper" if y == 0 else None)
        ax.annotate(r.note, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=7)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), rows["claim"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)  # text (< 1 pp) and digits (~10 pp) rows both readable
    ax.set_xlabel("paired difference, accuracy points (mean and 95% t-CI over seeds; linear within ±1, log beyond)")
    if rows["paper"].notna().any():
        ax.legend(loc="lower right", fontsize=7)
    return fig


def plot_per_client_differences(table: pd.DataFrame, treatment: str, control: str, seeds_note: str = ""):
    """Per-client paired difference (mean, 95% t-CI) ordered by client size, each client labelled
    with its width under both methods (control -> treatment): where does the gain come from?"""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(table) + 1.2))
    for y, (client, r) in enumerate(table.iterrows()):
        color = "tab:green" if r["diff"] > 0 else "tab:red"
        ax.errorbar(r["diff"], y, xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]], fmt="o",
                    color=color, capsize=3)
        ax.annotate(f"w {r[f'width {control}']:.2f} → {r[f'width {treatment}']:.2f}", (1.01, y),
                    xycoords=("axes fraction", "data"), va="center", fontsize=7)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(table)), [f"{c} (n={r['n_train']:,.0f})" for c, r in table.iterrows()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{treatment} − {control}, client test accuracy (pp)")
    ax.set_title(f"per client, largest first{'; ' + seeds_note if seeds_note else ''}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gap_by_round(gaps: dict[str, pd.DataFrame], seeds_note: str = ""):
    """The paired gap (mean, 95% t-CI) against round, one line per comparison."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, g in gaps.items():
        ax.errorbar(g.index, g["diff"], yerr=[g["diff"] - g["ci_low"], g["ci_high"] - g["diff"]],
                    marker="o", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel("round")
    ax.set_ylabel("paired gap, mean accuracy (pp)")
    ax.legend(fontsize=7)
    if seeds_note:
        ax.set_title(seeds_note, fontsize=8)
    fig.tight_layout()
    return fig


def plot_allocations(widths: pd.DataFrame, title: str = ""):
    """Each client's width (rows: clients, largest first; columns: policies) as grouped bars."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 * len(widths) + 2.5, 3.4))
    widths.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("width w_k")
    ax.set_xlabel("")
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_many_clients(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None):
    """A many-client federation, one record per method of one seed. Left: each client's width
    against its n_k (log scale). Right: the budget each round's participants spend
    (``round_budget_used``), as a histogram per method, with B dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    label = label or _method
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for rec in records:
        a.scatter(rec["sizes"], rec["widths"], s=10, alpha=0.6, label=label(rec))
    a.set_xscale("log")
    a.set_xlabel("n_k (training targets of the client)")
    a.set_ylabel("width w_k")
    a.legend(fontsize=7)
    spend = pd.DataFrame({"method": [label(r) for r in records for _ in r["round_budget_used"]],
                          "spend": [v for r in records for v in r["round_budget_used"]]})
    sns.histplot(spend, x="spend", hue="method", bins=40, element="step", ax=b)
    b.axvline(records[0]["budget"], color="k", ls="--", lw=1)
    b.set_xlabel("budget spent by a round's participants (B dashed)")
    fig.tight_layout()
    return fig


TARGET_LABELS = {"seconds per round (median)": "training round (median)", "wall seconds": "wall time",
                 "peak RSS MiB (all processes)": "peak memory"}


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
        absolute = "; ".join(f"{TARGET_LABELS[name]} {r['flower before']:.4g} → {r['flower after']:.4g} "
                             f"(in-process {r['in-process before']:.4g} → {r['in-process after']:.4g})"
                             for name, r in b.iterrows())
        text += (" Before → after the changes of issue 20 (lazily built clients, a window of messages in "
                 f"flight), Flower / in-process: {before_after_sentence(b)} Flower itself (s, s, MiB): {absolute}.")
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
            f"{f['peak RSS MiB: Ray actors']:.0f} MiB (each holds the clients it served), Ray's own processes "
            f"{f['peak RSS MiB: Ray system']:.0f} MiB. Flower's own code: its link state spent {scan_s:.0f} s in "
            f"{scan_n:,} scans for nodes' "
            f"messages ({1000 * scan_s / o['messages']:.1f} ms per message), a cost of the engine that grows with "
            f"nodes × messages held and that no change of ours removes.")
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


def plot_engines(measures: pd.DataFrame, round_seconds: dict[str, Sequence[float]], title: str = ""):
    """The two engines side by side. Left: wall seconds of each training round. Right: wall
    seconds of the run by phase (:func:`engine_phases`), with the peak resident memory of all
    processes written on each bar."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for engine, rs in round_seconds.items():
        a.plot(np.arange(1, len(rs) + 1), rs, marker=".", label=engine)
    a.set_xlabel("round")
    a.set_ylabel("seconds (training + aggregation)")
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)
    split = engine_phases(measures, round_seconds)
    split = split.loc[:, (split.abs() > 0).any()]
    bottom = np.zeros(len(split))
    for phase in split.columns:
        b.bar(split.index, split[phase].clip(lower=0), bottom=bottom, label=phase)
        bottom += split[phase].clip(lower=0).to_numpy()
    for i, e in enumerate(measures.index):
        b.text(i, measures.loc[e, "wall seconds"], f"{measures.loc[e, 'peak RSS MiB (all processes)']:.0f} MiB",
               ha="center", va="bottom", fontsize=8)
    b.set_ylabel("wall seconds")
    b.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_spec_curve(table: pd.DataFrame, seeds_note: str = ""):
    """The specification curve, one column per protocol. Top: each specification's HASA − uniform
    difference after the last round with its 95 % CI, sorted, coloured by significance (paired t,
    p < 0.05: blue above zero, red below, grey neither), lines at 0 and at the paper's gain.
    Bottom: which setup each estimate comes from (one dot per column)."""
    import matplotlib.pyplot as plt
    curve = table[table["family"].str.startswith("Specification curve")]
    specs = list(dict.fromkeys(curve["spec"]))
    fig, axes = plt.subplots(2, len(PROTOCOLS), figsize=(5.2 * len(PROTOCOLS), 2.8 + 0.22 * len(specs)),
                             sharex="col", squeeze=False, gridspec_kw={"height_ratios": [1.3, 1]})
    for col, protocol in enumerate(PROTOCOLS):
        t = curve[curve["protocol"] == protocol].sort_values("diff pp").reset_index(drop=True)
        top, bottom = axes[0, col], axes[1, col]
        colour = np.where(t["p_t"] >= 0.05, "grey", np.where(t["diff pp"] > 0, "tab:blue", "tab:red"))
        for x, r in t.iterrows():
            top.errorbar(x, r["diff pp"], yerr=[[r["diff pp"] - r["ci_low"]], [r["ci_high"] - r["diff pp"]]],
                         fmt="o", color=colour[x], capsize=3, ms=5)
            bottom.scatter(x, specs.index(r["spec"]), color=colour[x], s=25)
        top.axhline(0, color="black", lw=0.8)
        top.axhline(PAPER_GAIN, color="tab:green", lw=1, ls="--", label=f"paper: +{PAPER_GAIN:.2f} pp")
        top.set_title(f"{t['comparison'].iloc[0]} ({protocol}), mean accuracy after the last round", fontsize=9)
        top.set_ylabel("difference (pp)")
        top.legend(fontsize=7, loc="best")
        bottom.set_yticks(range(len(specs)), specs, fontsize=7)
        bottom.set_ylim(len(specs) - 0.5, -0.5)
        bottom.set_xticks(range(len(t)))
        bottom.set_xticklabels([])
        bottom.set_xlabel("specifications, sorted by the estimate")
        bottom.grid(axis="y", lw=0.3)
    if seeds_note:
        fig.suptitle(seeds_note, fontsize=8)
    fig.tight_layout()
    return fig


def plot_unit_movement(movement: pd.DataFrame, records: Sequence[dict[str, Any]], seeds_note: str = ""):
    """How far each unit moved, by its position as a width (x) and method (colour), median over
    seeds, one panel per width dimension; dotted lines at the widths of the first seed's
    clients under ``hasa``: the units beyond uniform's width are the extra width HASA hands out."""
    import matplotlib.pyplot as plt
    dims = list(dict.fromkeys(movement["dim"]))
    fig, axes = plt.subplots(1, len(dims), figsize=(4.6 * len(dims), 3.2), squeeze=False)
    first = min(r["seed"] for r in records)
    hasa_widths = sorted({round(w, 3) for r in records if r["seed"] == first and _method(r) == "hasa"
                          for w in r["widths"]})
    for ax, dim in zip(axes[0], dims):
        med = movement[movement["dim"] == dim].groupby(["method", "position"])["movement"].median().reset_index()
        for method, g in med.groupby("method", sort=False):
            ax.plot(g["position"], g["movement"], label=method, lw=1.2)
        for w in hasa_widths:
            ax.axvline(w, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("unit position (as a width)")
        ax.set_ylabel("movement from init (L2)")
        ax.set_title(f"{dim}: {movement.loc[movement['dim'] == dim, 'param'].iloc[0]} per unit", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    if seeds_note:
        fig.suptitle(f"{seeds_note}; dotted: hasa's client widths, seed {first}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_sweep(sweep: pd.DataFrame, budget: float, seeds_note: str = ""):
    """Mean client accuracy (over clients, then mean ± sd over seeds) of each method's trained model
    cut to every evaluation width of the sweep, one line per method; dashed at the budget B. Where
    a method's line stops rising, wider slices carry nothing more of what was learned."""
    import matplotlib.pyplot as plt
    per_seed = sweep.groupby(["method", "seed", "eval_width"])["accuracy"].mean()
    agg = per_seed.groupby(["method", "eval_width"]).agg(["mean", "std"]).reset_index()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for method, g in agg.groupby("method", sort=False):
        ax.errorbar(g["eval_width"], g["mean"], yerr=g["std"], label=method, lw=1.2, capsize=2, marker=".")
    ax.axvline(budget, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("evaluation width (nested slice of the trained model)")
    ax.set_ylabel("mean client accuracy (%)")
    ax.legend(fontsize=7)
    if seeds_note:
        ax.set_title(f"{seeds_note}; dashed: B = {budget:g}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_scores_vs_need(scores: pd.DataFrame, need: pd.DataFrame, validity: pd.DataFrame,
                        names: Sequence[str], seeds_note: str = ""):
    """One scatter per score: each (client, seed)'s score against its measured need for width,
    titled with the mean within-seed Spearman rho from :func:`score_validity`."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    merged = scores.merge(need, on=["seed", "client"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2))
    for ax, name in zip(axes, names):
        sns.scatterplot(data=merged, x=name, y="need", hue="client", ax=ax, legend=ax is axes[-1], s=25)
        v = validity.loc[name]
        ax.set_title(f"{name}: ρ = {v['rho_need']:.2f}, p = {v['p_perm']:.2g}", fontsize=9)
    axes[0].set_ylabel("need for width (pp)")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    if seeds_note:
        fig.suptitle(seeds_note, fontsize=8)
    fig.tight_layout()
    return fig


# =============================================================================================
# 5. Report and README: every number filled from results/
# =============================================================================================

README = REPO / "README.md"
REPORT = "REPORT.md"  # in the results folder


def say(tests: pd.DataFrame, comparison: str, metric: str = "mean", *, ci: bool = True, family: bool = False,
        power: bool = False, wins: bool = False, verdict: bool = False) -> str:
    """One paired test in words, for a notebook's generated conclusion: the difference in pp, then
    (as asked) its 95 % CI, the Holm p (with its family), n / power / MDE80, the wins, the verdict.
    ``tests`` is a :func:`compare_family` table, indexed by (comparison, metric) or not."""
    t = tests if isinstance(tests.index, pd.MultiIndex) else tests.set_index(["comparison", "metric"])
    r = t.loc[(comparison, metric)]
    parts = [f"95% CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"] if ci else []
    parts.append(f"Holm p = {r['p_holm']:.3g}" + (f" in family '{r['family']}'" if family else ""))
    if power:
        parts.append(f"n = {r['n']}, power at {PAPER_GAIN:+.2f} pp = {r['power_at_effect']:.2f}, "
                     f"MDE80 = {r['mde80']:.2f} pp")
    if wins:
        parts += [f"wins {r['wins']}", f"MDE80 = {r['mde80']:.2f} pp"]
    return f"{r['diff']:+.2f} pp ({', '.join(parts)})" + (f": {r['verdict']}" if verdict else "")


def _claims(results_dir: Path) -> pd.DataFrame:
    return pd.read_csv(current(results_dir / "headline.csv"))


def claim_sentences(results_dir: Path, claim: str) -> list[str]:
    """One generated sentence per headline row of a claim (``"1"`` ... ``"4"``): the comparison, the
    paired difference with its 95 % CI, the Holm p of its family, n and the verdict."""
    rows = _claims(results_dir)
    rows = rows[rows["claim"].str.startswith(f"{claim}. ")]
    return [headline_sentence(r._asdict(), numbered=False) for r in rows.itertuples()]


def headline_sentence(r: dict[str, Any], numbered: bool = True) -> str:
    """One headline row in words: the comparison, the paired difference with its 95 % CI, the Holm
    p of its family, n and the verdict; a robustness row (the median over setups, no CI) with its
    joint sign-flip p. ``numbered=False`` drops the claim number."""
    claim = r["claim"] if numbered else r["claim"].split(". ", 1)[1]
    if np.isnan(r["ci_low"]):
        return (f"{claim}: {r['diff']:+.2f} pp, joint sign-flip p = {r['p_holm']:.2g} (n = {r['n']} seeds): "
                f"**{r['verdict']}**")
    return (f"{claim}: {r['diff']:+.2f} pp [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], Holm p = {r['p_holm']:.2g} "
            f"(family '{r['family']}', n = {r['n']}): **{r['verdict']}**")


def verdict_text(results_dir: Path, claim: str) -> str:
    sentences = "; ".join(claim_sentences(results_dir, claim))
    return f"**Verdict** (generated from `results/headline.csv`): {sentences}."


def verdicts_text(results_dir: Path) -> str:
    """The README's summary: one line per claim."""
    names = {"1": "HASA beats uniform", "2": "best worst/tail among matched baselines", "3": "reversing hurts",
             "4": "cross-domain gain depends on the score"}
    return "\n".join(f"* **Claim {k}** ({v}): " + "; ".join(claim_sentences(results_dir, k)) + "."
                     for k, v in names.items())


def many_clients_text(results_dir: Path) -> str:
    t = pd.read_csv(current(results_dir / "many_clients_paired_tests.csv")).set_index(["comparison", "metric"])
    cmp = t.index[0][0]
    return (f"**Measured** (generated from `results/many_clients_paired_tests.csv`): {cmp}, mean "
            f"{say(t, cmp, 'mean', family=True)}; tail {say(t, cmp, 'tail')}.")


def paper_text(_: Path) -> str:
    return (f"mean client test accuracy **{PAPER_ACCURACY['uniform']:.2f} % (uniform) → "
            f"{PAPER_ACCURACY['hasa']:.2f} % (HASA)** ({PAPER_GAIN:+.2f} pp), and better worst-client accuracy;")


def setup_text(_: Path) -> str:
    """The choices where the paper is silent, read from the engine's defaults and profiles."""
    m, d = config("paper", "medium"), config("paper", "digits")
    rows = [
        ("text model", f"1-layer word LSTM, embedding E = {m.emb_dim}, hidden H = {m.hidden_dim}, trained from "
                       f"scratch; vocabulary = training-title tokens seen ≥ {m.min_count} times"),
        ("image model", f"CNN with {m.cnn_widths[0]}/{m.cnn_widths[1]}/{m.cnn_widths[2]} channels/units "
                        "(conv, conv, fc), 28×28 grey inputs"),
        ("local optimiser", f"SGD, lr {m.lr:g} (text) / {d.lr:g} (images), batch {m.batch_size}, "
                            f"gradient-norm clip {m.clip:g}, {m.local_epochs} local epoch per round"),
        ("rounds", f"{m.rounds} (text) / {d.rounds} (images), evaluation every {m.eval_every}"),
        ("data", f"{m.test_frac:.0%} of each client's examples held out for test (seeded); images: at most "
                 f"{d.max_examples_per_client:,} training and {d.max_test_per_domain:,} test images per domain"),
        ("published rule's defaults", f"B = {m.budget:g}, w_min = {m.w_min:g}, w_max = cap = {m.w_max:g}, "
                                      f"α = {m.alpha:g}, participation {m.participation:g}, weights n_k "
                                      "(FedProC's; whether they are the paper's is not known)"),
        ("our level rule", f"levels {{{', '.join(f'{x:g}' for x in m.levels)}}}, FLOP budget at w_ref = {m.w_ref:g}"),
        ("aggregation", f"`{m.aggregation}` (the paper's FedAvg) for claim 1; `selective` for the matched baselines"),
        ("seeds", f"{SEEDS['paper']} per method (the paper's count); {POWER_SEEDS['paper']} for the core comparison"),
    ]
    return pd.DataFrame(rows, columns=["choice", "value (a `RunConfig` field each)"]).to_markdown(index=False) + "\n"


def engine_text(_: Path) -> str:
    return f"Engine version {ENGINE_VERSION} (part of every cache key; `hasa_core.ENGINE_VERSION`)."


def spec_curve_sentences(table: pd.DataFrame, joint: pd.DataFrame, planned: int | None = None) -> list[str]:
    """One generated sentence per protocol: is claim 1's verdict robust to the setup? With fewer
    seeds than ``planned``, each says it is an interim result."""
    out = []
    for j in joint.itertuples():
        interim = (f"**Interim: {j.seeds} of the planned {planned} seeds.** "
                   if planned is not None and j.seeds < planned else "")
        t = table[(table["protocol"] == j.protocol) & table["family"].str.startswith("Specification curve")]
        positive = int((t["diff pp"] > 0).sum())
        holm_sig = int((t["p_holm"] < 0.05).sum())
        if j.p_median < 0.05 and positive in (0, len(t)):
            verdict = (f"robust to the setup: the effect is {'positive' if positive else 'negative'} in every "
                       "specification")
        elif j.p_median < 0.05:
            verdict = (f"the median effect is {'positive' if j.median > 0 else 'negative'}, but its sign depends "
                       f"on the setup ({positive} of {len(t)} specifications positive)")
        elif positive in (0, len(t)):
            verdict = (f"not established: every specification is {'positive' if positive else 'negative'}, but "
                       f"the joint test cannot exclude chance with {j.seeds} seeds")
        else:
            verdict = (f"not robust: across setups there is no joint effect, and the sign depends on the setup "
                       f"({positive} of {len(t)} specifications positive)")
        out.append(
            interim +
            f"**{j.comparison} (`{j.protocol}`), {j.specifications} specifications x {j.seeds} paired seeds:** "
            f"median effect {j.median:+.2f} pp (sign-flip joint p = {j.p_median:.3g}); "
            f"{j.significant_negative} specifications significantly below zero and {j.significant_positive} above "
            f"at p < 0.05 (chance alone gives {j.chance_negative:.2f} and {j.chance_positive:.2f} on average; "
            f"joint p = {j.p_negative:.3g} and {j.p_positive:.3g}); {holm_sig} of {len(t)} remain significant "
            f"after Holm within the family \"Specification curve ({j.protocol})\". At the calibrated stopping "
            f"round (uniform nearest the paper's {PAPER_ACCURACY['uniform']:.2f} %) the median effect is "
            f"{j.calibrated_median:+.2f} pp. The paper's +{PAPER_GAIN:.2f} pp lies inside the 95 % CI of: "
            f"{j.paper_gain_inside_ci_of}. "
            f"Claim 1's verdict under `{j.protocol}` is {verdict}.")
    return out


def mechanism_sentence(bands: pd.DataFrame, association: pd.DataFrame, narrower: pd.DataFrame,
                       budget: float, w_max: float, trained_width: pd.DataFrame | None = None,
                       sweep: pd.DataFrame | None = None) -> str:
    """The dilution explanation of claim 1's sign, in one generated paragraph (Medium): the
    movement of the extra width (the bands between B and w_max) against uniform's trained units,
    the association, the narrower-evaluation test at B and, where given, the decisive test at the
    well-trained width (:func:`trained_width_evaluation`) and the accuracy sweep (see
    :func:`trained_width_sentence`)."""
    hid = bands[bands["dim"] == "hid"]
    lo, hi = (np.array([float(str(b).strip("(]").split(",")[i]) for b in hid["band"]]) for i in (0, 1))
    extra, inside = (lo >= budget - 1e-9) & (hi <= w_max + 1e-9), hi <= budget + 1e-9

    def beyond(method: str) -> float:  # the extra width: units between uniform's width and w_max
        return float(hid[extra & (hid["method"] == method)]["mean"].mean())
    trained = float(hid[(hid["method"] == "uniform") & inside]["mean"].mean())
    a = association.set_index("dim").loc["hid"]
    n = narrower.set_index("comparison")

    def rec(m: str) -> str:
        r = n.loc[f"{m}: capped − allocated"]
        return (f"{r['diff']:+.2f} pp [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], Holm p = {r['p_holm']:.3g} "
                f"in family 'Narrower evaluation'")
    recovery = n.loc["hasa: capped − allocated"]
    supported = recovery["p_holm"] < 0.05 and recovery["diff"] > 0
    h = hid[hid["method"] == "hasa"]
    h_lo = np.array([float(str(b).strip("(]").split(",")[0]) for b in h["band"]])
    faded = h_lo[(h["mean"].to_numpy() < trained / 2) & (h_lo < w_max)]
    onset = float(faded.min()) if len(faded) else float("nan")
    if trained_width is not None:
        verdict = trained_width_sentence(trained_width, onset, supported, sweep, budget)
    elif supported:
        verdict = "The dilution explanation is **supported**: cutting the under-trained width back recovers accuracy."
    else:
        verdict = (f"Cutting back to B does not recover `hasa`'s accuracy, so this test does **not support** the "
                   f"dilution explanation; but under `hasa` the hidden units' movement already falls below half of "
                   f"uniform's from width {onset:.2f}, below B, so the cut at B keeps diluted units and the test at "
                   f"the well-trained width is still to be run.")
    return (f"**Where the extra width goes** (notebook 10, Medium, LSTM hidden units): the units beyond "
            f"uniform's width (positions from B = {budget:g} to w_max = {w_max:g}) moved "
            f"{beyond('hasa'):.3f} on average under `hasa` (`full`) and {beyond('hasa·sel'):.3f} under "
            f"`hasa·sel`, against {trained:.3f} for uniform's "
            f"trained units. A client's effective trained width correlates with its accuracy difference "
            f"against uniform at Spearman ρ = {a['spearman']:.2f} (permutation p = {a['p_perm']:.3g}, "
            f"{int(a['pairs'])} client × method pairs). Evaluating every client at min(w_k, B) after the same "
            f"training changes `hasa`'s mean accuracy by {rec('hasa')} and `hasa·sel`'s by {rec('hasa·sel')}. "
            + verdict)


def trained_width_sentence(trained: pd.DataFrame, onset: float, recovered_at_b: bool,
                           sweep: pd.DataFrame | None = None, budget: float = 0.5) -> str:
    """The verdict of :func:`trained_width_evaluation` on the dilution explanation, in words
    (``recovered_at_b``: whether the cut at B recovered accuracy; ``onset``: the width from which
    HASA's units move less than half of uniform's). With ``sweep`` (mean accuracy %, index the
    evaluation width, a column per method), also what the width past the frontier adds to `hasa`
    against what uniform's width from the same point to ``budget`` adds to uniform."""
    t = trained.set_index("comparison")

    def say_t(c: str) -> str:
        r = t.loc[c]
        return (f"{r['diff']:+.2f} pp [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], Holm p = {r['p_holm']:.3g} "
                f"in family 'Trained-width evaluation'")
    rec = t.loc["hasa: trained − allocated"]
    gap = rec["diff"] - t.loc["hasa trained − uniform", "diff"]  # uniform − hasa, as allocated
    fade = (f"the movement of its hidden units falls below half of uniform's from width {onset:.2f}"
            if np.isfinite(onset) else "none of its hidden-unit bands moves less than half of uniform's")
    out = (f"Cutting back to B {'recovers' if recovered_at_b else 'does not recover'} `hasa`'s accuracy; {fade}. "
           f"The decisive test cuts each client back to the widest slice whose width bands all moved on average "
           f"at least half as far as uniform's trained units (median evaluation width "
           f"{rec['eval_width_median']:.2f}): `hasa` changes by {say_t('hasa: trained − allocated')} "
           f"(against uniform: {say_t('hasa trained − uniform')}), `hasa·sel` by "
           f"{say_t('hasa·sel: trained − allocated')}. ")
    if rec["p_holm"] < 0.05 and rec["diff"] > 0:
        out += "So the under-trained extra width **harms**: removing it recovers accuracy. "
    elif rec["p_holm"] < 0.05:
        out += "So the slowly moving extra width does not harm: removing it costs accuracy. "
    elif rec["ci_high"] < gap:
        out += (f"No recovery is detected, and the 95 % CI excludes one that would close the {gap:+.2f} pp gap to "
                f"uniform: the under-trained width does **not harm** enough to explain the loss. ")
    else:
        out += (f"With a minimum detectable effect of {rec['mde80']:.2f} pp, whether the under-trained width harms is "
                "neither confirmed nor refuted. ")
    if sweep is not None:
        w = float(rec["eval_width_median"])
        sw = sweep.set_index("eval_width") if "eval_width" in sweep.columns else sweep
        near = sw.index[np.abs(sw.index.to_numpy() - w).argmin()]
        b = sw.index[np.abs(sw.index.to_numpy() - budget).argmin()]
        uni_gain, hasa_gain = sw.loc[b, "uniform"] - sw.loc[near, "uniform"], -rec["diff"]
        kind = ("harmful on average: it costs accuracy" if hasa_gain < 0 else
                "wasted rather than harmful: the budget HASA spends past the frontier buys little"
                if hasa_gain < uni_gain / 2 else "not wasted")
        out += (f"What the width past the frontier buys: {hasa_gain:+.2f} pp for `hasa`, against {uni_gain:+.2f} pp "
                f"for uniform's width from {near:g} to B = {budget:g} (accuracy sweep, mean over seeds), so "
                f"under `full` the extra width is {kind}.")
    return out


def mechanism_text(results_dir: Path) -> str:
    needed = [results_dir / f"mechanism_{t}.csv" for t in ("bands", "association", "narrower")]
    if not all(p.is_file() for p in needed):
        return "The mechanism analysis (notebook 10) has not been computed into `results/` yet."
    bands, association, narrower = (pd.read_csv(p) for p in needed)
    trained, sweep = (pd.read_csv(p) if p.is_file() else None for p in
                      (results_dir / "mechanism_trained_width.csv", results_dir / "mechanism_accuracy_sweep.csv"))
    cfg = config("paper")
    return mechanism_sentence(bands, association, narrower, cfg.budget, cfg.w_max, trained, sweep)


def spec_curve_text(results_dir: Path) -> str:
    path = results_dir / "spec_curve_joint.csv"
    if not path.is_file():
        return ("The specification curve (notebook 09) has not been computed into `results/` yet: "
                "`make reproduce` computes it.")
    sentences = spec_curve_sentences(pd.read_csv(results_dir / "spec_curve.csv"), pd.read_csv(path), SEEDS["paper"])
    across = results_dir / "spec_curve_dilution_association.csv"
    return "\n\n".join(sentences + ([dilution_across_sentence(pd.read_csv(across))] if across.is_file() else []))


TEXTS: dict[str, Callable[[Path], str]] = {
    "verdicts": verdicts_text, "paper": paper_text, "setup": setup_text, "engine": engine_text,
    "many-clients": many_clients_text, "spec-curve": spec_curve_text, "mechanism": mechanism_text,
    "flower-scale": flower_scale_text,
    **{f"verdict-{k}": functools.partial(verdict_text, claim=k) for k in "1234"},
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


# =============================================================================================
# 6. Bench and command line
# =============================================================================================

def bench_table(benchmarks: Sequence[str] = ("medium", "digits"), policy: str = "hasa", device: str = "cpu",
                rounds: int = 11) -> pd.DataFrame:
    """:func:`hasa_core.bench` for each benchmark, as one table (a column per benchmark)."""
    rows = []
    for name in benchmarks:
        res = bench(config("paper", benchmark=name, policy=policy, device=device), rounds=rounds)
        print(bench_summary(res))
        rows.append(res)
    return pd.DataFrame(rows).set_index("benchmark").map(lambda v: f"{v:.3g}" if isinstance(v, float) else v).T


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_results", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pc = sub.add_parser("precompute", help="every run the notebooks of a profile need, cached")
    pc.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    pc.add_argument("--jobs", type=int, default=2)
    pc.add_argument("--only", nargs="*", help="experiment names (default: all)")
    rp = sub.add_parser("report", help="write results/REPORT.md and refill the README's generated blocks")
    rp.add_argument("--check", action="store_true", help="write nothing; fail if README or REPORT are stale")
    sub.add_parser("readme", help="refill the README's generated blocks only")
    pb = sub.add_parser("publish", help="move a notebook's staged outputs into place (make reproduce does it)")
    pb.add_argument("stage", help="the staging folder, results/.stage-* (relative: to the repository)")
    b = sub.add_parser("bench", help="hasa_core.bench for each benchmark, written to results/bench.md")
    b.add_argument("--benchmark", nargs="+", default=["medium", "digits"], choices=sorted(BENCHMARKS))
    b.add_argument("--policy", default="hasa")
    b.add_argument("--rounds", type=int, default=11, help="rounds timed; the first is not counted")
    b.add_argument("--device", default="cpu")
    b.add_argument("--out", default=str(DEFAULT_RESULTS_DIR / "bench.md"), help="Markdown table ('' = none)")
    args = ap.parse_args(argv)
    if args.cmd == "precompute":
        print(f"{precompute(args.profile, args.jobs, only=args.only)} distinct runs cached for profile {args.profile}")
    elif args.cmd == "report" and args.check:
        problems = check_report()
        for p in problems:
            print(f"STALE: {p}")
        if problems:
            raise SystemExit("README/REPORT are stale: run `python -m hasa_results report` (after `make reproduce`)")
        print("README.md and results/REPORT.md match results/; no number typed by hand")
    elif args.cmd == "report":
        print("wrote", ", ".join(str(p.relative_to(REPO)) for p in write_report()))
    elif args.cmd == "readme":
        print("README blocks refreshed:", ", ".join(update_readme()) or "none")
    elif args.cmd == "publish":
        print(f"published {len(publish(REPO / args.stage))} files from {args.stage}")
    else:
        table = bench_table(args.benchmark, args.policy, args.device, args.rounds)
        if args.out:
            write_text_atomic(Path(args.out), table.to_markdown(floatfmt=".3g") + "\n")
            print(f"wrote {args.out}")


if __name__ == "__main__":
    _main()
