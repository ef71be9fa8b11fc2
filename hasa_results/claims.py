"""Claims 1-4 and the summary (notebooks 01-06): the headline table and its verdicts, the
baselines' fidelity, the run time, the need for width; the claim sentences the README shows.

Imports: :mod:`hasa_core`, :mod:`hasa_records`, :mod:`hasa_results` shared layers and
:mod:`hasa_results.spec_curve`.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import RunConfig, config, expected_width, load_task, subnet_params
from hasa_records import cached_record
from hasa_results.experiments import PAPER_ACCURACY, PAPER_GAIN, POWER_SEEDS, SEEDS, experiments, run_experiment
from hasa_results.figures import PAPER_COLOUR, VERDICT_COLOURS, colour, finish, house_style
from hasa_results.frames import clients_frame, curves_frame, summaries_from_clients
from hasa_results.outputs import current, output_dirs
from hasa_results.plan import FAMILY, PRIMARIES, STATEMENTS, Primary, claim_verdict, family_level, simultaneous, verdict
from hasa_results.spec_curve import calibrated_round
from hasa_results.stats import paired_stats, score_validity
from hasa_results.words import amount, interval, p_value, pp


def need_for_width(low: Sequence[dict[str, Any]], high: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Measured need for width of each client and seed, in accuracy points:

        need_k = acc_k(every client at the largest width) - acc_k(every client at the smallest),

    from paired runs (same seed) of the two uniform allocations."""
    a = clients_frame(low).set_index(["seed", "client"])["accuracy"]
    b = clients_frame(high).set_index(["seed", "client"])["accuracy"]
    return (b - a).rename("need").reset_index()


# ---------------------------------------------------------------------------------------------
# The primary tests of the plan
# ---------------------------------------------------------------------------------------------

def primary_frames(profile: str, n_jobs: int = 2, results_dir: Path | None = None) -> dict[str, pd.DataFrame]:
    """The runs of the primaries as frames: experiment name -> one row per (method, seed, evaluation
    round) with the mean / worst / tail accuracy (%), ``final`` marking the last round. The
    ``need_digits`` runs come first: claim 4's allocation by the measured need is made from them."""
    run_experiment("need_digits", profile, n_jobs, results_dir)  # claim 4's positive control is made from these
    out = {}
    for name in ("claims", "claim4"):
        records, _ = run_experiment(name, profile, n_jobs, results_dir)
        curves = curves_frame(records)
        out[name] = curves.assign(final=curves["round"] == curves.groupby(["method", "seed"])["round"].transform("max"))
    return out


def claim4_tracking(profile: str, n_jobs: int = 2, results_dir: Path | None = None) -> pd.DataFrame:
    """How well each of claim 4's score variants tracks the clients' need for width, on the test
    seeds: :func:`score_validity` of the scores the variant's runs allocated by (from their
    records) against each client's need (its accuracy with every client at full width minus at
    w_min, the same seed). One row per variant: its label under ``full``, ``rho_need`` and the
    clients-as-unit permutation p."""
    records, _ = run_experiment("claim4", profile, n_jobs, results_dir)
    by = {(r["config"]["policy"], r["config"].get("score"), r["config"].get("aggregation")): r["method"]
          for r in records}
    of = {m: [r for r in records if r["method"] == m] for m in ("smallest", "full-width")}
    need = need_for_width(of["smallest"], of["full-width"])
    rows = []
    for r in records:
        if r["config"]["policy"] == "hasa" and r["config"]["aggregation"] == "full":
            rows += [{"seed": r["seed"], "client": c, "n_train": n, "variant": r["method"], "score": v}
                     for c, n, v in zip(r["clients"], r["sizes"], r["scores"])]
    scores = pd.DataFrame(rows).pivot_table(index=["seed", "client", "n_train"], columns="variant", values="score")
    variants = [m for (pol, _, agg), m in by.items() if pol == "hasa" and agg == "full"]
    validity = score_validity(scores.reset_index(), need, variants)
    return validity.reset_index().rename(columns={"score": "variant"})


def _variant_label(variant: str, protocol: str) -> str:
    """A claim-4 variant's method label under ``protocol`` (hasa[need] -> hasa·sel[need])."""
    if protocol == "full":
        return variant
    return variant.replace("[", "·sel[", 1) if "[" in variant else f"{variant}·sel"


def _component(p: Primary, control: str, wide: pd.DataFrame, m: int) -> dict[str, Any]:
    st = simultaneous(wide[p.treatment] - wide[control], p.effect, m)
    return {"claim": p.claim, "protocol": p.protocol, "metric": p.metric, "test": p.test,
            "comparison": f"{p.treatment} − {control}", "effect": p.effect, "effect_from": p.effect_from, **st,
            "verdict": verdict(st["ci_low"], st["ci_high"], p.effect)}


def _intersection_union(components: list[dict[str, Any]]) -> dict[str, Any]:
    """Claim 2's verdict over its components: contradicted when any baseline beats HASA (the one
    that beats it most surely: the lowest upper bound), else the weakest component's (the lowest
    lower bound, so the claim is reproduced only when every baseline is beaten)."""
    against = [c for c in components if c["verdict"] == "contradicted"]
    row = min(against, key=lambda c: c["ci_high"]) if against else min(components, key=lambda c: c["ci_low"])
    return {**row, "baselines beaten": sum(c["ci_low"] > 0 for c in components),
            "baselines": len(components)}


def primary_tests(frames: dict[str, pd.DataFrame], tracking: pd.DataFrame, at_round: int | None = None,
                  primaries: Sequence[Primary] = PRIMARIES, family: str = FAMILY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every declared primary (:data:`PRIMARIES`), one confirmatory family: (one row per primary:
    its contrast, the simultaneous CI and Bonferroni p, MDE80, power at the effect it is judged
    against, and its verdict; one row per component of the intersection-union tests of claim 2).
    ``at_round``: the text claims' tests at that evaluation round instead of the last (the
    calibrated stopping round, a declared sensitivity analysis); claim 4 always at its last.
    ``primaries`` and ``family``: another declared family (the second benchmark's), named in the
    ``family`` column; its Bonferroni m is the number of its primaries."""
    m, rows, components = len(primaries), [], []
    for p in primaries:
        f = frames[p.experiment]
        f = f[f["round"] == at_round] if at_round is not None and p.experiment == "claims" else f[f["final"]]
        wide = f.pivot(index="seed", columns="method", values=p.metric)
        if p.kind == "dependence":
            rows.append(_dependence(p, wide, tracking, m))
            continue
        comps = [_component(p, c, wide, m) for c in p.controls]
        if len(comps) == 1:
            rows.append(comps[0])
        else:
            components += comps
            rows.append(_intersection_union(comps))
    out = pd.DataFrame(rows).assign(family=family, round=at_round if at_round is not None else "last")
    return out, pd.DataFrame(components)


def _dependence(p: Primary, wide: pd.DataFrame, tracking: pd.DataFrame, m: int) -> dict[str, Any]:
    """Claim 4: per seed, the least-squares slope of each variant's gain over uniform (pp) on the
    variant's tracking of the need (rho), across the variants; the slopes' mean over seeds, tested
    in the family."""
    x = tracking.set_index("variant")["rho_need"]
    gains = pd.DataFrame({v: wide[_variant_label(v, p.protocol)] - wide["uniform"] for v in x.index})
    xc = x - x.mean()
    slopes = (gains - gains.mean(axis=1).to_numpy()[:, None]) @ xc / float(xc @ xc)
    st = simultaneous(slopes.to_numpy(), p.effect, m)
    return {"claim": p.claim, "protocol": p.protocol, "metric": p.metric, "test": p.test,
            "comparison": "slope of gain on tracking (pp per unit ρ)", "effect": p.effect,
            "effect_from": p.effect_from, **st, "verdict": verdict(st["ci_low"], st["ci_high"], p.effect)}


def claim_verdicts(primaries: pd.DataFrame, plan: Sequence[Primary] = PRIMARIES) -> pd.DataFrame:
    """One row per claim and protocol: each of its two primaries (test, difference, simultaneous CI,
    verdict) and the claim's verdict (:func:`claim_verdict`). ``primaries`` must hold exactly the
    tests ``plan`` declares, each once; otherwise a ValueError names the tests outside the plan,
    the declared tests missing and those given twice."""
    declared, given = [p.test for p in plan], Counter(primaries["test"])
    extra = [t for t in given if t not in declared]
    missing = [t for t in declared if t not in given]
    twice = [t for t, k in given.items() if k > 1]
    if extra or missing or twice:
        raise ValueError(f"verdicts come from the declared primaries only: not in the plan {extra}, "
                         f"declared but missing {missing}, given twice {twice}")
    rows = []
    for (claim, protocol), g in primaries.groupby(["claim", "protocol"], sort=False):
        row = {"claim": claim, "protocol": protocol, "paper says": STATEMENTS[claim]}
        for i, r in enumerate(g.itertuples(), 1):
            row.update({f"test {i}": r.comparison + f", {r.metric}", f"diff {i}": r.diff, f"ci_low {i}": r.ci_low,
                        f"ci_high {i}": r.ci_high, f"p_adjusted {i}": r.p_adjusted, f"mde80 {i}": r.mde80,
                        f"verdict {i}": r.verdict})
        row.update({"n": int(g["n"].iloc[0]), "verdict": claim_verdict(g["verdict"].tolist())})
        rows.append(row)
    return pd.DataFrame(rows)


OFFICIAL = {  # baseline -> (repository, file, commit) of the official implementation we compared with
    "HeteroFL": ("diaoenmao/HeteroFL-Computation-and-Communication-Efficient-Federated-Learning-for-Heterogeneous-"
                 "Clients", "src/fed.py, src/modules/modules.py", "311c889"),
    "FedRolex": ("AIoT-MLSys-Lab/FedRolex", "resnet_server.py, transformer_server.py", "704079d"),
    "Federated Dropout": ("Caldas et al. 2018 (arXiv 1812.07210), Sec. 3; FedRolex's random servers (AIoT-MLSys-Lab/"
                          "FedRolex)", "—", "704079d"),
    "FjORD": ("adap/flower (baseline by FjORD's authors)", "baselines/fjord/fjord/od/samplers/fixed_od.py, "
              "strategy.py", "24ea028"),
    "q-FFL": ("litian96/fair_flearn", "flearn/trainers/qffedavg.py", "578cca2"),
    "HASA": ("nclabteam/FedProC (public re-implementation)", "strategies/HASA.py, strategies/ptFL.py", "90efd91"),
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


def fidelity_table(effects: pd.DataFrame | None = None, evaluation: pd.DataFrame | None = None,
                   qffl: float | None = None) -> pd.DataFrame:
    """Every baseline against its official implementation: aspect | official (repository, file,
    commit) | ours | what it changes, measured | status (same, fixed, option, adapted, immaterial,
    open). Filled from :func:`official_effects` (the 'as published' aggregation) and from
    ``evaluation`` (:func:`evaluation_effects`: full-model against slice evaluation) where measured;
    ``qffl``: the q chosen for q-FFL."""
    def measured(baseline: str) -> str:
        if effects is None or effects.empty or baseline not in set(effects["baseline"]):
            return "not measured in this run"
        e = effects[(effects["baseline"] == baseline) & (effects["metric"] == "mean")]
        return "; ".join(f"{r.comparison}: mean {pp(r.diff)} {interval(r.ci_low, r.ci_high)}" for r in e.itertuples())

    def evaluated(method: str) -> str:
        if evaluation is None or evaluation.empty or method not in set(evaluation["method"]):
            return "not measured in this run"
        return "; ".join(f"{r.metric} {pp(r.diff)} {interval(r.ci_low, r.ci_high)}"
                         for r in evaluation[evaluation["method"] == method].itertuples())
    units = ("whole units either way at the widths it uses here (1/4, 1/2, 3/4, 1 of 128 units); differs "
             "only for w_min and other budgets")
    rows = [
        ("HeteroFL", "width slices", "static prefix slices, ceil(w D) units", "static prefix slices, floor(w D) "
         "(the published HASA rule, used for every method)", units, "immaterial"),
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
        ("HeteroFL", "evaluation", "each model rate's sub-model on the test data", "each client on the static "
         "slice of its width", "nothing", "same"),
        ("FedRolex", "rolling direction", "backward: torch.roll, window start -r mod D", "forward (the paper's "
         "formula)", "each unit's training count over a run is the same both ways", "immaterial"),
        ("FedRolex", "aggregation weights and row masking", "transformer_server.py: as HeteroFL's; resnet_server.py "
         "combine: biases and the classifier weighted by cumulative per-coordinate update counts",
         "n_k by default; HeteroFL's count weighting and row masking as options (its transformer path)",
         measured("FedRolex"), "option"),
        ("FedRolex", "evaluation", "the global full model", "each client on the static slice of its width; the "
         "full model as an option (Table 2 rows 'full-model evaluation')", evaluated("uniform·FedRolex"), "option"),
        ("FedRolex", "width slices", "ceil(w D)", "floor(w D)", units, "immaterial"),
        ("Federated Dropout", "which units, which clients", "Caldas et al.: one rate for every client; FedRolex's "
         "random servers: a fresh random subset per client and round", "a fresh random subset per client and "
         "round at each client's width: FjORD's 'extended FD' (per-client rates)", "nothing (with one common "
         "width it is FedRolex's random server)", "same"),
        ("Federated Dropout", "evaluation", "the global full model", "each client on the static slice of its "
         "width; the full model as an option", evaluated("uniform·FedDropout·sel"), "option"),
        ("FjORD", "maximum width", "a level (the device tier), p_max", "the client's width snapped down to a level",
         "no duplicate slice sizes; the budget counts what the clients train", "fixed"),
        ("FjORD", "width drawn per batch", "uniform over the levels <= p_max (ODSampler)", "the same", "nothing",
         "same"),
        ("FjORD", "footprint", "p_max is the device limit", "the budget counts the mean trained width; clients hold "
         "and exchange p_max", "uniform·FjORD holds 3/4 of each layer (Table 2's footprint columns)", "same"),
        ("FjORD", "self-distillation", "optional (off by default in the authors' Flower baseline)",
         "off by default; distill=True as an option whose extra pass at p_max the budget counts",
         "one row (uniform·FjORD·KD)", "option"),
        ("FjORD", "aggregation weights", "n_k", "n_k", "nothing", "same"),
        ("FjORD", "nested sub-slice", "a prefix of each layer, ceil(p D)", "the same prefix by views, floor(p D)",
         units, "immaterial"),
        ("q-FFL", "aggregation", "q-FedAvg (qffedavg.py): Delta = L (w - w_k), L = 1/lr, F_k on the whole training "
         "data before local steps, uniform client weights", "the same, per protocol for sliced subnets; in-process "
         "only", f"q = {qffl:g}, chosen on held-out training titles" if qffl else "q not chosen in this run", "same"),
        ("HASA", "allocation", "Eqs. 11-17 (JS score, rank, budget with w_min, w_max, cap)", "the same",
         "nothing (tested against hand-computed cases)", "same"),
        ("HASA", "width slices", "floor(beta K) units (ptFL._pt_retained_width)", "floor(w D), at least 1", "the "
         "first tables used ceil(w D): every HASA row re-run", "fixed"),
        ("HASA", "aggregation", "hasa_aggregation: 'full' (default) or 'selective', both n_k-weighted",
         "`full` and `selective`, both n_k-weighted", "every claim judged under both", "same"),
        ("HASA", "evaluation", "'resourcelevel': the global model at the client's width", "the same", "nothing",
         "same"),
    ]
    out = pd.DataFrame(rows, columns=["baseline", "aspect", "official", "ours", "what it changes, measured",
                                      "status"])
    out.insert(2, "official implementation", [" · ".join(OFFICIAL[b]) for b in out["baseline"]])
    return out


def evaluation_effects(cdf: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """What evaluating on the global full model (how FedRolex's and Federated Dropout's code evaluate)
    changes against each client's width slice: per method, paired over seeds, full model − slice on
    mean, worst and tail accuracy (pp; unadjusted 95 % CIs)."""
    by_slice = summaries_from_clients(cdf).set_index(["method", "seed"])
    by_model = summaries_from_clients(cdf, "accuracy_full_model").set_index(["method", "seed"])
    rows = [{"method": m, "metric": metric, **paired_stats(by_model.loc[m, metric], by_slice.loc[m, metric])}
            for m in methods for metric in ("mean", "worst", "tail")]
    return pd.DataFrame(rows)


def footprint(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per method: the mean width its clients train (what the budget counts: FjORD's mean draw, with
    self-distillation its widest slice too) and the share of the model's parameters a client holds,
    downloads and uploads in a round it trains (its widest slice; FjORD: p_max), averaged over
    clients and seeds."""
    rows, size = [], {}
    for r in records:
        cfg = RunConfig.from_dict(r["config"])
        if (cfg.benchmark, r["seed"]) not in size:
            task = load_task(cfg, r["seed"])
            size[cfg.benchmark, r["seed"]] = (task.arch, subnet_params(task.arch, 1.0))
        arch, whole = size[cfg.benchmark, r["seed"]]
        rows += [{"method": r["method"], "trained width": expected_width(w, cfg.extraction, cfg.levels, cfg.distill),
                  "parameters held and sent": subnet_params(arch, w) / whole} for w in r["widths"]]
    return pd.DataFrame(rows).groupby("method", sort=False).mean()


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


@house_style
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
        ax.set_title(f"{name}: ρ = {v['rho_need']:.2f}, p = {v['p_perm']:.2g}")
    axes[0].set_ylabel("need for width (pp)")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1, 0.5))
    return finish(fig, seeds_note)


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
        ("aggregation", "every claim under both protocols: `full` (the re-implementation's default) and `selective`"),
        ("seeds", f"{SEEDS['paper']} per method (the paper's count); {POWER_SEEDS['paper']} for the core comparison"),
    ]
    return pd.DataFrame(rows, columns=["choice", "value (a `RunConfig` field each)"]).to_markdown(index=False) + "\n"


def calibrated_primaries(frames: dict[str, pd.DataFrame], tracking: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """The declared sensitivity analysis of the text claims: every primary of claims 1-3 at the
    calibrated stopping round (:func:`calibrated_round`: uniform's mean accuracy, averaged over the
    seeds, nearest the paper's 13.82 %; chosen from uniform's curve only), in the same family of 16.
    Returns (the round, the tests)."""
    r = calibrated_round(frames["claims"][frames["claims"]["method"] == "uniform"])
    tests, _ = primary_tests(frames, tracking, at_round=r)
    return r, tests[tests["claim"] != "4"]


HEADLINE_NAMES = {"1": "HASA beats uniform", "2": "best worst/tail among matched baselines",
                  "3": "reversing the allocation hurts", "4": "the image gain depends on the score"}
PAPER_SAYS = {"1": f"mean {PAPER_ACCURACY['uniform']:.2f} % → {PAPER_ACCURACY['hasa']:.2f} % "
                   f"({pp(PAPER_GAIN)}); a better worst client",
              "2": "the best worst and tail client of the four matched baselines",
              "3": "reversed widths lower mean and tail accuracy",
              "4": "the image gain grows with how well the score tracks the need for width"}
"""The paper's claims in a few words, for the README's verdict table (the full statements are
:data:`STATEMENTS`)."""
FIGURES = {"1": "figures/01_primaries.png", "2": "figures/02_primaries.png", "3": "figures/03_primaries.png",
           "4": "figures/04_dependence.png"}


def _finding(r: pd.Series) -> str:
    """A claim's verdict under one protocol with its first primary's number: the metric, the
    difference (claim 4: the slope, pp per unit ρ; claim 2: the weakest baseline comparison) and its
    simultaneous CI."""
    unit = " per unit ρ" if r["test 1"].startswith("slope") else ""
    metric = r["test 1"].rsplit(", ", 1)[-1]
    return f"**{r['verdict']}**: {metric} {pp(r['diff 1'])}{unit} {interval(r['ci_low 1'], r['ci_high 1'])}"


def headline_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The README's verdict table in words, one row per claim: what the paper says, and under each
    protocol the claim's verdict (:func:`claim_verdicts`) with its first primary's number, and the
    claim's figure."""
    rows = []
    for claim, g in verdicts.groupby("claim", sort=False):
        by = g.set_index("protocol")
        rows.append({"claim": f"{claim}. {HEADLINE_NAMES[claim]}", "the paper says": PAPER_SAYS[claim],
                     **{f"under `{pr}`": _finding(r) for pr, r in by.iterrows()},
                     "figure": f"[figure]({FIGURES[claim]})"})
    return pd.DataFrame(rows)


def headline_markdown(verdicts: pd.DataFrame, extra: Sequence[dict[str, str]] = ()) -> str:
    """:func:`headline_table` as Markdown, with ``extra`` rows (same columns) below, and a line
    under it saying what the numbers are."""
    t = pd.concat([headline_table(verdicts), pd.DataFrame(list(extra))], ignore_index=True)
    n = int(verdicts["n"].max())
    level = 1 - family_level()
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)]
    return ("\n".join(lines) + f"\n\nEach cell: the claim's verdict under that protocol, and its first primary "
            f"test's difference with the {level:.1%} simultaneous CI over {n} paired seeds (claim 2: HASA against "
            "the matched baseline it beats least; claim 4: the slope of the gain on the score's tracking of the "
            "need for width).\n")


@house_style
def plot_headline(primaries: pd.DataFrame):
    """The headline: every primary of the plan, two panels on linear axes (the text claims in pp,
    claim 4's slope in pp per unit of rank correlation), one row per test with its protocol, the
    difference and its simultaneous CI coloured by verdict, the effect it is judged against (the
    paper's or the declared smallest effect of interest) as a green tick, and zero dashed."""
    import matplotlib.pyplot as plt
    text, image = primaries[primaries["claim"] != "4"], primaries[primaries["claim"] == "4"]
    fig, axes = plt.subplots(2, 1, figsize=(8, 0.32 * len(primaries) + 2.2),
                             gridspec_kw={"height_ratios": [len(text), len(image)]})
    for ax, part, unit in ((axes[0], text, "pp"), (axes[1], image, "pp per unit ρ")):
        labels = []
        for y, r in enumerate(part.itertuples()):
            ax.errorbar(r.diff, y, xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o", capsize=3,
                        color=VERDICT_COLOURS[r.verdict], label=r.verdict)
            ax.plot(r.effect, y, "|", color=PAPER_COLOUR, ms=12, mew=2)
            labels.append(f"{r.claim}. {r.comparison.replace('·', '.')}, {r.metric} ({r.protocol})")
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(part)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"difference, {unit} (error bars: {1 - family_level():.1%} simultaneous CI over seeds; "
                      "green tick: the effect judged against)")
    seen = {}
    for ax in axes:
        handles, names = ax.get_legend_handles_labels()
        seen.update(zip(names, handles))
    fig.legend([seen[v] for v in VERDICT_COLOURS if v in seen], [v for v in VERDICT_COLOURS if v in seen],
               loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(seen), title="verdict")
    return finish(fig)


def claim_words(primaries: pd.DataFrame, claim: str) -> str:
    """One claim's primaries in words: per protocol, the claim's verdict and each test with its
    difference, simultaneous CI, Bonferroni p, MDE80 and verdict."""
    out = []
    for protocol, g in primaries[primaries["claim"] == claim].groupby("protocol", sort=False):
        tests = "; ".join(f"{r.comparison}, {r.metric}: {pp(r.diff)} {interval(r.ci_low, r.ci_high)}, "
                          f"{p_value(r.p_adjusted, 'adjusted p')}, MDE80 {amount(r.mde80)}: {r.verdict}"
                          for r in g.itertuples())
        out.append(f"under `{protocol}`, **{claim_verdict(g['verdict'].tolist())}** ({tests})")
    return (f"**Claim {claim} — primary tests** ({1 - family_level():.1%} simultaneous CIs, Bonferroni over the "
            f"{len(PRIMARIES)} primaries): "
            + "; ".join(out) + ".")


def claim_text(results_dir: Path, claim: str) -> str:
    """:func:`claim_words` from ``results/claims_primary.csv`` (the README's claim blocks)."""
    return claim_words(pd.read_csv(current(results_dir / "claims_primary.csv"), dtype={"claim": str}), claim)


@house_style
def plot_claim(primaries: pd.DataFrame, components: pd.DataFrame, claim: str, note: str = ""):
    """One claim's primary tests, one panel per protocol, one row per test (for claim 2: per matched
    baseline, the intersection-union test's components), the difference with its simultaneous CI
    coloured by verdict, and the effect it is judged against as a green tick; linear axes."""
    import matplotlib.pyplot as plt
    rows = components[components["claim"] == claim] if claim == "2" else primaries[primaries["claim"] == claim]
    protocols = list(dict.fromkeys(rows["protocol"]))
    per_panel = len(rows) // len(protocols)
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.6 * len(protocols), 0.4 * per_panel + 1.4),
                             sharex=True, squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        part = rows[rows["protocol"] == protocol]
        for y, r in enumerate(part.itertuples()):
            ax.errorbar(r.diff, y, xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o", capsize=3,
                        color=VERDICT_COLOURS[r.verdict])
            ax.plot(r.effect, y, "|", color=PAPER_COLOUR, ms=12, mew=2)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(part)), [f"{r.comparison}, {r.metric}: {r.verdict}" for r in part.itertuples()])
        ax.set_ylim(len(part) - 0.5, -0.5)
        ax.set_title(f"protocol {protocol}")
    fig.supxlabel(f"difference (pp); error bars: {1 - family_level():.1%} simultaneous CI over seeds; "
                  "green tick: the effect judged against")
    return finish(fig, note)


@house_style
def plot_dependence(frames: dict[str, pd.DataFrame], tracking: pd.DataFrame, note: str = ""):
    """Claim 4's dependence test as a picture: per protocol and metric, each score variant's mean
    gain over uniform (pp, with its 95 % CI over seeds) against how well the variant tracks the
    clients' need for width (rank correlation rho, measured on the test seeds), with the mean
    per-seed least-squares line."""
    import matplotlib.pyplot as plt
    f = frames["claim4"][frames["claim4"]["final"]]
    x = tracking.set_index("variant")["rho_need"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], ("mean", "worst")):
        wide = f.pivot(index="seed", columns="method", values=metric)
        for protocol, marker, shift in (("full", "o", -0.01), ("selective", "s", 0.01)):
            gains = pd.DataFrame({v: wide[_variant_label(v, protocol)] - wide["uniform"] for v in x.index})
            stats_ = [paired_stats(gains[v], np.zeros(len(gains))) for v in x.index]
            for v, st in zip(x.index, stats_):
                ax.errorbar(x[v] + shift, st["diff"], yerr=[[st["diff"] - st["ci_low"]], [st["ci_high"] - st["diff"]]],
                            fmt=marker, capsize=3, color=colour(v), mfc="white" if protocol == "selective" else None)
            xc = x - x.mean()
            slope = float(((gains - gains.mean(axis=1).to_numpy()[:, None]) @ xc / float(xc @ xc)).mean())
            grid = np.linspace(x.min(), x.max(), 2)
            ax.plot(grid, gains.mean().mean() + slope * (grid - x.mean()), color="grey",
                    ls="-" if protocol == "full" else ":", label=f"{protocol}: slope {slope:+.1f} pp per unit ρ")
        for v in x.index:
            ax.annotate(v, (x[v], ax.get_ylim()[1]), rotation=30, va="top")
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("score's rank correlation with the need for width (ρ)")
        ax.set_ylabel(f"{metric} accuracy gain over uniform (pp)")
        ax.legend(title="filled: full, open: selective; bars: 95 % CI")
    return finish(fig, note)


def summary_text(verdicts: pd.DataFrame, primaries: pd.DataFrame, calibrated: pd.DataFrame, at_round: int) -> str:
    """Notebook 06's conclusion: each claim's verdict under each protocol with its two tests, and
    which text primaries change verdict at the calibrated stopping round ``at_round``."""
    lines = [f"* Claim {r['claim']} under `{r['protocol']}`: **{r['verdict']}** ({r['test 1']}: {r['verdict 1']}; "
             f"{r['test 2']}: {r['verdict 2']})" for _, r in verdicts.iterrows()]
    both = calibrated.merge(primaries, on=["claim", "protocol", "metric"], suffixes=(" calibrated", ""))
    moved = both[both["verdict"] != both["verdict calibrated"]]
    changes = "; ".join(f"claim {r['claim']} {r['metric']} under `{r['protocol']}`: {r['verdict']} → "
                        f"{r['verdict calibrated']}" for _, r in moved.iterrows())
    return ("**Verdicts** (the worse of each claim's two primaries under each protocol):\n\n" + "\n".join(lines)
            + f"\n\nAt the calibrated stopping round (round {at_round}), {len(moved)} of {len(calibrated)} text "
            + "primaries change verdict" + (f": {changes}." if changes else "."))
