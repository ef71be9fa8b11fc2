"""Claims 1-4 and the summary (notebooks 01-06): the headline table and its verdicts, the
baselines' fidelity, the run time, the need for width; the claim sentences the README shows.

Imports: :mod:`hasa_core`, :mod:`hasa_records`, :mod:`hasa_results` shared layers and
:mod:`hasa_results.spec_curve`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import config
from hasa_records import DEFAULT_RESULTS_DIR, cached_record
from hasa_results.experiments import PAPER_ACCURACY, PAPER_GAIN, POWER_SEEDS, SEEDS, experiments, run_experiment
from hasa_results.figures import PAPER_COLOUR, finish, house_style
from hasa_results.frames import clients_frame, curves_frame
from hasa_results.outputs import current, output_dirs
from hasa_results.plan import FAMILY, PRIMARIES, STATEMENTS, Primary, claim_verdict, simultaneous, verdict
from hasa_results.spec_curve import spec_curve_headline_rows
from hasa_results.stats import paired_stats, score_validity


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
    round) with the mean / worst / tail accuracy (%), ``final`` marking the last round."""
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
    of = {m: [r for r in records if r["method"] == m] for m in ("smallest", "full")}
    need = need_for_width(of["smallest"], of["full"])
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
                  primaries: Sequence[Primary] = PRIMARIES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every declared primary (:data:`PRIMARIES`), one confirmatory family: (one row per primary:
    its contrast, the simultaneous CI and Bonferroni p, MDE80, power at the effect it is judged
    against, and its verdict; one row per component of the intersection-union tests of claim 2).
    ``at_round``: the text claims' tests at that evaluation round instead of the last (the
    calibrated stopping round, a declared sensitivity analysis); claim 4 always at its last."""
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
    out = pd.DataFrame(rows).assign(family=FAMILY, round=at_round if at_round is not None else "last")
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


def claim_verdicts(primaries: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and protocol: each of its two primaries (test, difference, simultaneous CI,
    verdict) and the claim's verdict (:func:`claim_verdict`)."""
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


@house_style
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
            ax.plot(r.paper, y, "x", color=PAPER_COLOUR, ms=9, mew=2, label="paper" if y == 0 else None)
        ax.annotate(r.note, (1.01, y), xycoords=("axes fraction", "data"), va="center")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), rows["claim"])
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)  # text (< 1 pp) and digits (~10 pp) rows both readable
    ax.set_xlabel("paired difference, accuracy points (mean and 95% t-CI over seeds; linear within ±1, log beyond)")
    if rows["paper"].notna().any():
        ax.legend(loc="lower right")
    return fig


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
