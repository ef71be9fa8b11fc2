"""Notebook 09, whole: does claim 1's verdict survive the setup? The specification curve, its joint
sign-flip test, the calibrated stopping round, the dilution across setups, the plot and the
generated sentences.

Imports: :mod:`hasa_results` shared layers and :mod:`hasa_results.mechanism`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hasa_results.experiments import (
    PAPER_ACCURACY,
    PAPER_GAIN,
    PROTOCOLS,
    SEEDS,
    run_experiment,
    spec_label,
    spec_methods,
    specifications,
)
from hasa_results.figures import CI_LABEL, PAPER_COLOUR, SIGN_COLOURS, finish, house_style
from hasa_results.mechanism import dilution_index, effective_widths
from hasa_results.stats import holm, paired_stats, sign_vectors
from hasa_results.words import p_value, pp


def spec_frame(profile: str, n_jobs: int = 2, results_dir: Path | None = None,
               n_seeds: int | None = None) -> pd.DataFrame:
    """The specification curve's runs (experiment ``spec``; ``n_seeds`` as in
    :func:`run_experiment`): one row per (specification, method, seed, evaluation round) with the
    mean client accuracy (%); ``final`` marks the last round. Methods are named as in
    :data:`SPEC_METHODS`."""
    records, _ = run_experiment("spec", profile, n_jobs, results_dir, n_seeds)
    role = {spec_label(sp, c): (sp, m) for sp in specifications(profile) for m, c in spec_methods(profile, sp).items()}
    return pd.DataFrame([{"spec": role[r["method"]][0], "method": role[r["method"]][1], "seed": r["seed"],
                          "round": c["round"], "mean": 100 * c["mean"], "final": c is r["curve"][-1]}
                         for r in records for c in r["curve"]])


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
    flips = sign_vectors(diffs.shape[0])
    means, pos, neg = _flipped_stats(diffs, flips, alpha)
    obs_means, obs_pos, obs_neg = _flipped_stats(diffs, np.ones((1, diffs.shape[0]), int), alpha)
    med, null_med = float(np.median(obs_means)), np.median(means, axis=1)
    return {"specifications": diffs.shape[1], "seeds": diffs.shape[0], "sign_vectors": len(flips),
            "median": med, "p_median": float(np.mean(np.abs(null_med) >= abs(med) - 1e-12)),
            "significant_positive": int(obs_pos[0]), "p_positive": float(np.mean(pos >= obs_pos[0])),
            "significant_negative": int(obs_neg[0]), "p_negative": float(np.mean(neg >= obs_neg[0])),
            "chance_positive": float(pos.mean()), "chance_negative": float(neg.mean())}


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


def calibrated_round(frame: pd.DataFrame, target: float = PAPER_ACCURACY["uniform"]) -> int:
    """The evaluation round at which the uniform runs' mean accuracy, averaged over seeds, is
    nearest ``target`` (%): chosen from the uniform curve only, never from HASA's."""
    u = frame[frame["method"] == "uniform"].groupby("round")["mean"].mean()
    return int((u - target).abs().idxmin())


def _spec_rows(frame: pd.DataFrame, target: float) -> list[dict[str, Any]]:
    """One row per (specification, protocol): the final-round test and the test at the calibrated
    round. A specification whose runs at its calibrated round are those of an earlier one (100
    rounds calibrated at a round <= 30 is the default run up to then) is marked
    ``calibrated duplicate of`` and counted once."""
    rows, seen = [], {}
    for spec, f in frame.groupby("spec", sort=False):
        r_cal = calibrated_round(f, target)
        final = f[f["final"]].pivot(index="seed", columns="method", values="mean")
        at = f[f["round"] == r_cal].pivot(index="seed", columns="method", values="mean")
        fingerprint = tuple(np.round(at.to_numpy(), 10).ravel())
        duplicate = seen.setdefault(fingerprint, spec)
        for protocol, method in PROTOCOLS.items():
            st, cal = paired_stats(final[method], final["uniform"]), paired_stats(at[method], at["uniform"])
            rows.append({"spec": spec, "protocol": protocol, "comparison": f"{method} − uniform", "n": st["n"],
                         "rounds": int(f["round"].max()), "uniform %": final["uniform"].mean(),
                         "diff pp": st["diff"], "ci_low": st["ci_low"], "ci_high": st["ci_high"],
                         "p_t": st["p_t"], "mde80": st["mde80"], "calibrated round": r_cal,
                         "uniform % at calibrated": at["uniform"].mean(), "calibrated diff pp": cal["diff"],
                         "calibrated p_t": cal["p_t"],
                         "calibrated duplicate of": duplicate if duplicate != spec else ""})
    return rows


def spec_curve_table(curve: pd.DataFrame, target: float = PAPER_ACCURACY["uniform"]) -> pd.DataFrame:
    """The specification curve: one row per (specification, protocol) with the uniform mean, the
    paired HASA − uniform difference after the last round (t-based 95 % CI, p) and at the
    :func:`calibrated_round`. ``p_holm`` adjusts within one family per protocol, named in
    ``family`` ("Specification curve (full)" / "(selective)"). The default setup over the powered
    seeds is claim 1's primary test, reported once, in the confirmatory family (notebook 06)."""
    out = pd.DataFrame(_spec_rows(curve, target))
    out["family"] = [f"Specification curve ({p})" for p in out["protocol"]]
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
                     "calibrated_median": float(t.loc[t["calibrated duplicate of"] == "",
                                                      "calibrated diff pp"].median()),
                     "calibrated_duplicates": ", ".join(f"{a} (= {b})" for a, b in zip(
                         t["spec"], t["calibrated duplicate of"]) if b) or "none",
                     "paper_gain_inside_ci_of": ", ".join(holds) or "none"})
    return pd.DataFrame(rows)


@house_style
def plot_spec_curve(table: pd.DataFrame, seeds_note: str = ""):
    """The specification curve, one column per protocol. Top: each specification's HASA − uniform
    difference after the last round with its 95 % CI, sorted, coloured by significance (paired t,
    p < 0.05: :data:`SIGN_COLOURS`, explained in the legend), lines at 0 and at the paper's gain.
    Bottom: which setup each estimate comes from (one dot per column)."""
    import matplotlib.pyplot as plt
    curve = table[table["family"].str.startswith("Specification curve")]
    specs = list(dict.fromkeys(curve["spec"]))
    fig, axes = plt.subplots(2, len(PROTOCOLS), figsize=(5.2 * len(PROTOCOLS), 2.8 + 0.22 * len(specs)),
                             sharex="col", squeeze=False, gridspec_kw={"height_ratios": [1.3, 1]})
    for col, protocol in enumerate(PROTOCOLS):
        t = curve[curve["protocol"] == protocol].sort_values("diff pp").reset_index(drop=True)
        top, bottom = axes[0, col], axes[1, col]
        sign = np.where(t["p_t"] >= 0.05, 0, np.sign(t["diff pp"])).astype(int)
        for x, r in t.iterrows():
            top.errorbar(x, r["diff pp"], yerr=[[r["diff pp"] - r["ci_low"]], [r["ci_high"] - r["diff pp"]]],
                         fmt="o", color=SIGN_COLOURS[sign[x]], capsize=3, ms=5)
            bottom.scatter(x, specs.index(r["spec"]), color=SIGN_COLOURS[sign[x]], s=25)
        for s, what in ((1, "above 0"), (0, "neither"), (-1, "below 0")):
            top.errorbar([], [], yerr=[], fmt="o", color=SIGN_COLOURS[s], label=f"{what} (p < 0.05)" if s else what)
        top.axhline(0, color="black", lw=0.8)
        top.axhline(PAPER_GAIN, color=PAPER_COLOUR, lw=1, ls="--", label=f"paper: +{PAPER_GAIN:.2f} pp")
        top.set_title(f"{t['comparison'].iloc[0]} ({protocol}), mean accuracy after the last round")
        top.set_ylabel(f"difference (pp); {CI_LABEL}")
        top.legend(loc="best", ncols=2)
        bottom.set_yticks(range(len(specs)), specs)
        bottom.set_ylim(len(specs) - 0.5, -0.5)
        bottom.set_xticks(range(len(t)))
        bottom.set_xticklabels([])
        bottom.set_xlabel("specifications, sorted by the estimate")
        bottom.grid(axis="y", lw=0.3)
    return finish(fig, seeds_note)


def spec_curve_sentences(table: pd.DataFrame, joint: pd.DataFrame, planned: int | None = None) -> list[str]:
    """One generated sentence per protocol: is claim 1's verdict robust to the setup? With fewer
    seeds than ``planned``, each says it is an interim result and gives the smallest joint p its
    seeds allow (2 / 2^seeds, two-sided)."""
    out = []
    for j in joint.itertuples():
        interim = (f"**Interim: {j.seeds} of the planned {planned} seeds** (the smallest joint p that "
                   f"{j.seeds} seeds' sign flips can give is {p_value(2 / j.sign_vectors)}). "
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
            verdict = (f"not established: the joint test does not exclude chance, and the sign depends on the setup "
                       f"({positive} of {len(t)} specifications positive)")
        out.append(
            interim +
            f"**{j.comparison} (`{j.protocol}`), {j.specifications} specifications x {j.seeds} paired seeds:** "
            f"median effect {pp(j.median)} (sign-flip joint {p_value(j.p_median)}); "
            f"{j.significant_negative} specifications significantly below zero and {j.significant_positive} above "
            f"at p < 0.05 (chance alone gives {j.chance_negative:.2f} and {j.chance_positive:.2f} on average; "
            f"joint {p_value(j.p_negative)} and {p_value(j.p_positive)}); {holm_sig} of {len(t)} remain significant "
            f"after Holm within the family \"Specification curve ({j.protocol})\". At the calibrated stopping "
            f"round (uniform nearest the paper's {PAPER_ACCURACY['uniform']:.2f} %) the median effect is "
            f"{pp(j.calibrated_median)} (duplicates counted once: {j.calibrated_duplicates}). "
            f"The paper's +{PAPER_GAIN:.2f} pp lies inside the 95 % CI of: "
            f"{j.paper_gain_inside_ci_of}. "
            f"Across setups, under `{j.protocol}`: {verdict}.")
    return out


def spec_curve_text(results_dir: Path) -> str:
    path = results_dir / "spec_curve_joint.csv"
    if not path.is_file():
        return ("The specification curve (notebook 09) has not been computed into `results/` yet: "
                "`make reproduce` computes it.")
    sentences = spec_curve_sentences(pd.read_csv(results_dir / "spec_curve.csv"), pd.read_csv(path), SEEDS["paper"])
    across = results_dir / "spec_curve_dilution_association.csv"
    return "\n\n".join(sentences + ([dilution_across_sentence(pd.read_csv(across))] if across.is_file() else []))
