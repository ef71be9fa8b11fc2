"""Every experiment of the artifact by name: its configs (labelled by :func:`method_label`, one
name per run everywhere) and seeds; the paper's numbers; ``precompute`` and ``run_experiment``,
the notebooks' entry point to the record store.

Imports: :mod:`hasa_core`, :mod:`hasa_records`, :mod:`hasa_results.outputs`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import EXTRACTIONS, EXTRAS, POLICIES, PROFILES, SWEEP, RunConfig, config, lookup, many_clients_config
from hasa_records import cached_record, has_extras, record_path, run_many, run_pairs
from hasa_results.outputs import output_dirs


def canonical(cfg: RunConfig) -> RunConfig:
    """The one config that stands for ``cfg``'s computation. When every client trains the same
    units (one common width, ``POLICIES[...].common``, under an extraction rule where a width's
    units are the same for every client, ``EXTRACTIONS[...].same_units``: uniform, smallest or
    full width under static, rolling or FjORD slices), the ``full`` and ``selective`` protocols
    are the same arithmetic, so both protocols' rows are served by one run (aggregation ``full``)."""
    if POLICIES[cfg.policy].common and EXTRACTIONS[cfg.extraction].same_units:
        return cfg.replace(aggregation="full")
    return cfg


def method_label(cfg: RunConfig) -> str:
    """The one name of a run's method everywhere (tables, figures, prose): the policy, then the
    extraction (·FedRolex, ·FedDropout, ·FjORD; HeteroFL's static slices are the default), ·sel for
    the selective protocol, [score] when not the published ``js``, and any budget setting that
    differs from the profile's."""
    base = config(_profile_of(cfg), benchmark=cfg.benchmark)
    label = POLICY_LABELS.get(cfg.policy, cfg.policy)
    if cfg.extraction != "static":
        label += "·" + EXTRACTIONS[cfg.extraction].baseline
    if cfg.distill:
        label += "·KD"
    if cfg.q > 0:
        label += "·q-FFL"
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
    policy = POLICIES[cfg.policy]
    if (cfg.score != "js" or cfg.shuffle_scores) and policy.scored:
        label += f"[{score}]"
    extras = [f"{name}={getattr(cfg, name):g}" for name in ("budget", "w_min", "w_max", "cap", "alpha")
              if getattr(cfg, name) != getattr(base, name)
              and (name == "budget" or (policy.scored and policy.budget == "linear"))]
    if cfg.digits_clients_per_domain != base.digits_clients_per_domain:
        extras.append(f"{cfg.digits_clients_per_domain}/domain")
    if cfg.partition != "natural":
        extras.append({"publication_day": "by day", "leaf": "LEAF roles",
                       "dirichlet": f"{cfg.num_clients} Dir({cfg.dirichlet_alpha:g})"}[cfg.partition])
    if cfg.participation < 1:
        extras.append(f"{cfg.participation:.0%}/round")
    if cfg.q > 0:
        extras.append(f"q={cfg.q:g}")
    if cfg.validation:
        extras.append("validation")
    return label + (f" ({', '.join(extras)})" if extras else "")


POLICY_LABELS = {"full": "full-width"}
"""Display names of policies whose engine name is also a protocol's: every client at width 1 is
``full-width``, so that ``full`` only ever names the aggregation protocol."""
SCORE_LABELS = {"given": "need"}
"""Display names of scores whose engine name says how, not what: the image study's ``given``
scores are the clients' measured need for width (:func:`measured_need`)."""


def _profile_of(cfg: RunConfig) -> str:
    smoke = PROFILES["smoke"][cfg.benchmark]
    return "smoke" if all(getattr(cfg, k) == v for k, v in smoke.items()) else "paper"


SEEDS = {"paper": 10, "smoke": 3}         # as many seeds as the paper: 0-9


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


Q_CHOICES = (0.1, 1.0, 5.0)
"""q-FFL's exponents to choose from (Li et al. 2020 tune q on validation data from such a grid)."""


def chosen_q(profile: str, results_dir: Path | None = None) -> float | None:
    """q-FFL's q for Table 2: of :data:`Q_CHOICES`, the one whose uniform-width q-FFL runs have the
    highest tail-client accuracy (claim 2's metric), averaged over seeds, on each client's held-out
    part of its TRAINING titles (the ``qffl_select`` experiment; test titles are never looked at).
    None until those records exist (:func:`precompute` makes them first)."""
    m = functools.partial(config, profile, "medium", validation=True)
    root = results_dir or output_dirs(profile)[0]
    tails = {}
    for q in Q_CHOICES:
        recs = [cached_record(m(q=q), s, root) for s in range(SEEDS[profile])]
        if any(r is None for r in recs):
            return None
        tails[q] = float(np.mean([r["tail"] for r in recs]))
    return max(Q_CHOICES, key=lambda q: (tails[q], -q))


AS_PUBLISHED = {"weighting": "count", "row_masking": True}
"""HeteroFL's and FedRolex's official aggregation: each client counted once per element, and the
vocabulary rows averaged over the clients whose data hold them (absent classes masked in training)."""


def text_claims(make: Callable[..., RunConfig]) -> list[RunConfig]:
    """The runs of the text claims' tests on a benchmark (``make(**overrides)`` gives its config):
    uniform, hasa and reverse under both protocols, and the matched baselines FedRolex and FjORD
    at uniform width (both protocols give them the same run)."""
    return [make(), *(make(policy=p, aggregation=a) for p in ("hasa", "reverse") for a in ("full", "selective")),
            make(extraction="rolling"), make(extraction="ordered")]


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
    :data:`SPEC_METHODS`, labelled by :func:`spec_label`; its default row over the powered seeds
    is claim 1's primary, in ``claims``). ``shakespeare`` / ``shakespeare_leaf``: the text claims on Shakespeare
    (:func:`text_claims`), the paper-shaped federation over the powered seeds and LEAF's over the
    first 10 (seeds 0-9). ``claims`` holds every Medium run of the declared primary tests of claims 1-3
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
    table2 += [m(extraction="ordered", distill=True)]  # FjORD with its self-distillation
    q = chosen_q(profile, results_dir)
    table2 += [m(q=q), *(m(policy="hasa", q=q, aggregation=a) for a in ("full", "selective"))] if q else []
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
        "mechanism": (group(m(), m(policy="hasa"), m(policy="hasa", aggregation="selective"), m(policy="reverse")),
                      n),
        "mechanism_digits": (group(d(), d(policy="hasa"), d(policy="hasa", score="feature_js"),
                                   d(policy="reverse", score="feature_js")), n),
        "claims": (group(m(), *(m(policy=p, aggregation=a) for p in ("hasa", "reverse") for a in protocols),
                         *(m(extraction=e, aggregation=a) for e in ("rolling", "ordered", "random")
                           for a in protocols)),
                   powered),
        "need_digits": (group(d(policy="smallest"), d(policy="full")), NEED_SEEDS[profile]),
        "qffl_select": (group(*(m(q=q, validation=True) for q in Q_CHOICES)), n),
        "shakespeare": (group(*text_claims(functools.partial(config, profile, "shakespeare"))), powered),
        "shakespeare_leaf": (group(*text_claims(functools.partial(many_clients_config, profile, "shakespeare"))),
                             n),
        "claim4": (group(d(), d(policy="smallest"), d(policy="full"),
                         *(d(policy="hasa", score=s, aggregation=a, **extra) for s, extra in claim4_scores
                           for a in protocols)), powered),
    }


WITH_EXTRAS = {"spec": EXTRAS, "mechanism": EXTRAS, "mechanism_digits": EXTRAS}
"""Experiments whose records must hold run extras (``hasa_core.EXTRAS``: unit movement, accuracy
at min(w_k, B)): older records of their configs are re-run once to fill them
(``hasa_records.fill_extras``)."""


def extras_of(name: str, cfg: RunConfig) -> tuple[str, ...]:
    """The run-extra fields experiment ``name`` needs in ``cfg``'s records: its
    :data:`WITH_EXTRAS`, and for the mechanism's scored allocations the accuracy sweep
    (``hasa_core.SWEEP``: every slice of the trained model), which measures what their extra width
    carries (the uniform control has no extra width; its sweep is not asked for)."""
    sweep = SWEEP if name == "mechanism" and POLICIES[cfg.policy].scored else ()
    return WITH_EXTRAS.get(name, ()) + sweep


def precompute(profile: str, n_jobs: int = 2, results_dir: Path | None = None,
               only: Sequence[str] | None = None) -> int:
    """Every (config, seed) that the profile's experiments need, in one pool of ``n_jobs``
    processes, lowest seeds first (so the 10-seed tables are complete before the extra seeds of
    the powered comparisons); the notebooks then only read the cache. Experiments whose configs
    are made from other runs' records (the positive control of claim 4, :func:`measured_need`)
    appear once those are cached: precompute repeats until nothing is pending. Says, at the end, how
    many records it reused, how many this process computed and how many another process (a
    concurrent precompute) made meanwhile. Returns the number of distinct runs."""
    results_dir = results_dir or output_dirs(profile)[0]
    unknown = sorted(set(only or ()) - set(experiments(profile, results_dir)))
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; valid names: "
                         f"{', '.join(experiments(profile, results_dir))}")

    def done(c: RunConfig, s: int, extras: tuple[str, ...]) -> bool:
        rec = cached_record(c, s, results_dir)
        return rec is not None and has_extras(rec, extras)
    tally = {"computed": 0, "reused": 0, "made elsewhere": 0}  # of the runs pending here (see run_pairs)
    while True:
        jobs: dict[tuple[str, int], tuple[RunConfig, int, tuple[str, ...]]] = {}
        for name, (methods, seeds) in experiments(profile, results_dir).items():
            if not only or name in only:
                for c in methods.values():
                    for s in seeds:
                        before = jobs.get((c.key(), s), (c, s, ()))[2]
                        jobs[(c.key(), s)] = (c, s, tuple(dict.fromkeys(before + extras_of(name, c))))
        pending = [job for job in jobs.values() if not done(*job)]
        if not pending:
            break
        print(f"precompute ({profile}): {len(jobs)} distinct runs, {len(jobs) - len(pending)} reused from the "
              f"cache, {len(pending)} to compute (or to re-run for their extras)")
        for extras in sorted({e for _, _, e in pending}, key=len, reverse=True):
            pairs = sorted(((c, s) for c, s, e in pending if e == extras),
                           key=lambda cs: (cs[1], -cs[0].rounds * cs[0].local_epochs * cs[0].hidden_dim))
            # one pool per set of extras, lowest seeds first and within a seed the longest run first, so
            # that no core waits for a seed's last run and the pool's last minutes are not one long run
            run_pairs(pairs, n_jobs, results_dir, desc=f"{profile}, {len(pairs)} runs" + (
                f" (with {', '.join(extras)})" if extras else ""), extras=extras, tally=tally)
    elsewhere = tally["made elsewhere"] + tally["reused"]  # pending here, then found made by another process
    print(f"precompute ({profile}): done; {len(jobs) - tally['computed'] - elsewhere} records reused, "
          f"{tally['computed']} computed by this process, {elsewhere} made meanwhile by another process")
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
    by_extras: dict[tuple[str, ...], dict[str, RunConfig]] = {}
    for label, c in methods.items():
        by_extras.setdefault(extras_of(name, c), {})[label] = c
    recs: dict[str, list[dict[str, Any]]] = {}
    for extras, group in by_extras.items():
        for r in run_methods(group, seeds, n_jobs, results_dir, progress=profile != "smoke", extras=extras):
            recs.setdefault(r["method"], []).append(r)
    return [r for label in methods for r in recs[label]], seeds


ALL_RUNS_METRICS = ("accuracy", "width", "score", "n_train")
"""The per-client values of :func:`all_runs_frame`: final-round accuracy (%), width, score and
training size."""


def all_runs_frame(profile: str, results_dir: Path | None = None) -> pd.DataFrame:
    """Every cached run of the profile's experiments as one tidy frame, one row per (experiment,
    method, seed, client, metric): the run's cache key, benchmark, partition, policy, extraction and
    protocol beside it, and the value (:data:`ALL_RUNS_METRICS`). A run that serves several
    experiments appears under each. Runs not cached yet are left out (nothing is computed)."""
    results_dir = results_dir or output_dirs(profile)[0]
    rows = []
    for name, (methods, seeds) in experiments(profile, results_dir).items():
        for label, c in methods.items():
            for seed in seeds:
                r = cached_record(c, seed, results_dir)
                if r is None:
                    continue
                run = {"experiment": name, "method": label, "key": record_path(c, seed, results_dir).parent.name,
                       "benchmark": c.benchmark, "partition": c.partition, "policy": c.policy,
                       "extraction": c.extraction, "protocol": c.aggregation, "seed": seed}
                values = {"accuracy": [100 * a for a in r["accuracy"]], "width": r["widths"], "score": r["scores"],
                          "n_train": r["sizes"]}
                rows += [{**run, "client": client, "metric": m, "value": float(values[m][k])}
                         for k, client in enumerate(r["clients"]) for m in ALL_RUNS_METRICS]
    return pd.DataFrame(rows)


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


PROTOCOLS = {"full": "hasa", "selective": "hasa·sel"}  # aggregation protocol -> its HASA method vs uniform
