"""Notebook 11, whole: the second benchmark (Shakespeare, clients = speaking roles). Both
federations' frames, the declared second-benchmark family (claims 1 and 3's primaries), the
exploratory matched baselines, the cross-benchmark table (does each Medium verdict carry over?)
with its sentences and figure, and uniform's accuracy beside the published Shakespeare numbers.

Imports: :mod:`hasa_core`, :mod:`hasa_results` shared layers and :mod:`hasa_results.claims`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import MIN_ROLE_CHARS, WINDOW, RunConfig, units_of
from hasa_results.claims import claim_verdicts, primary_tests
from hasa_results.experiments import run_experiment
from hasa_results.figures import PAPER_COLOUR, VERDICT_COLOURS, finish, house_style
from hasa_results.frames import clients_frame, curves_frame, test_targets
from hasa_results.outputs import current
from hasa_results.plan import (
    ALPHA,
    PRIMARIES,
    SECOND_BENCHMARK,
    SECOND_BENCHMARK_FAMILY,
    SECOND_BENCHMARK_RUNS,
    federation_suffix,
)
from hasa_results.stats import compare_family, summary_table
from hasa_results.words import interval, pp

EXPERIMENTS = tuple(SECOND_BENCHMARK_RUNS)
"""The second benchmark's experiments: the paper-shaped federation, then LEAF's."""
REFERENCE = "Medium"
"""The benchmark whose verdicts the cross-benchmark table carries over (``results/claims_verdicts.csv``)."""
CROSS_CLAIMS = tuple(dict.fromkeys(p.claim for p in SECOND_BENCHMARK))
"""The claims the second benchmark re-tests (declared in the plan): 1 and 3."""
BASELINES_FAMILY = "Exploratory (Shakespeare: hasa·sel against the matched baselines)"
MATCHED = (("hasa·sel", "uniform·FedRolex"), ("hasa·sel", "uniform·FjORD"))
"""The matched-budget comparisons on Shakespeare (selective protocol, as Table 2's): exploratory."""
MATCHED_METRICS = ("worst", "tail")  # claim 2's metrics
NOT_COMPUTED = "not computed yet"
CI_LEVEL = 1 - ALPHA / len(PRIMARIES)
"""The simultaneous level of both families (16 primaries each): 1 - 0.05/16."""
CI_WORDS = f"{100 * CI_LEVEL:.1f} % simultaneous CI over seeds"

PUBLISHED = {
    "LEAF (Caldas et al. 2018, arXiv 1812.01097)": {
        "accuracy (%)": np.nan,
        "what": "FedAvg's test accuracy on LEAF's Shakespeare",
        "status": "not verified: no number could be read here from the paper, and LEAF's repository states none "
                  "(TalwalkarLab/leaf at 09ec454: README.md, models/README.md, paper_experiments/shakespeare.sh)",
        "model": "2-layer LSTM, 256 units, embedding 8, 80 characters in, the next one out; a vocabulary of 80 "
                 "characters (TalwalkarLab/leaf at 09ec454: models/shakespeare/stacked_lstm.py, "
                 "models/baseline_constants.py, models/utils/language_utils.py)",
        "data": "1,129 roles (LEAF's README at 09ec454), one example per character position (overlapping "
                "windows, stride 1), each role's examples split by sample",
    },
    "FedAvg (McMahan et al. 2017, arXiv 1602.05629)": {
        "accuracy (%)": 54.0,
        "what": "the target accuracy of its Table 2 (the rounds until FedAvg's Shakespeare LSTM reaches it), not "
                "a final accuracy",
        "status": "not checked against the paper here: read from a secondary transcription of its Table 2",
        "model": "2-layer character LSTM (256 units, embedding 8, 80 characters unrolled; as issue 30 states it, "
                 "not re-read from the paper here)",
        "data": "one client per speaking role and play; not re-read from the paper here",
    },
}
"""Published Shakespeare accuracies (constants with their source, not results), each with what the
number is and whether it could be checked here. Where a number could not be verified it is NaN."""


# ---------------------------------------------------------------------------------------------
# Frames and the declared family
# ---------------------------------------------------------------------------------------------

def shakespeare_records(profile: str, n_jobs: int = 2, results_dir: Path | None = None
                        ) -> dict[str, list[dict[str, Any]]]:
    """Both federations' records (cached; computed where missing): experiment -> its records."""
    return {e: run_experiment(e, profile, n_jobs, results_dir)[0] for e in EXPERIMENTS}


def with_final(curves: pd.DataFrame) -> pd.DataFrame:
    """A :func:`curves_frame` with ``final`` marking each run's last evaluation round."""
    return curves.assign(final=curves["round"] == curves.groupby(["method", "seed"])["round"].transform("max"))


def shakespeare_frames(records: dict[str, Sequence[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    """Experiment -> one row per (method, seed, evaluation round) with mean / worst / tail (%) and
    ``final`` (the frames :func:`hasa_results.claims.primary_tests` reads)."""
    return {e: with_final(curves_frame(recs)) for e, recs in records.items()}


def federation_name(experiment: str) -> str:
    """A federation's name, from its configuration: its label suffix (LEAF's roles and
    participation), or its number of clients where the labels carry none."""
    cfg = SECOND_BENCHMARK_RUNS[experiment]
    return f"Shakespeare {federation_suffix(experiment).strip() or f'({cfg.num_clients} roles)'}"


def on(method: str, experiment: str) -> str:
    """A method's label in one of the second benchmark's experiments."""
    return method + federation_suffix(experiment)


def second_benchmark_tests(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The declared second-benchmark family (:data:`SECOND_BENCHMARK`: claims 1 and 3's primaries on
    both federations, Bonferroni over its 16 tests), one row per primary, with its ``experiment``."""
    tests, _ = primary_tests(frames, pd.DataFrame(), primaries=SECOND_BENCHMARK, family=SECOND_BENCHMARK_FAMILY)
    return tests.assign(experiment=[p.experiment for p in SECOND_BENCHMARK])


def second_benchmark_verdicts(tests: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Experiment -> its claims' verdicts per protocol (:func:`claim_verdicts`: the worse of each
    claim's two tests), from :func:`second_benchmark_tests`."""
    return {e: claim_verdicts(tests[tests["experiment"] == e], [p for p in SECOND_BENCHMARK if p.experiment == e])
            for e in dict.fromkeys(tests["experiment"])}


def runs_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per federation and method (labels without the federation): mean / worst / tail accuracy (%)
    at the last round, mean and sd over seeds, and the number of seeds."""
    parts = {}
    for e, f in frames.items():
        last = f[f["final"]].assign(method=lambda d: d["method"].str.removesuffix(federation_suffix(e)))
        parts[federation_name(e)] = summary_table(last)
    return pd.concat(parts, names=["federation", "method"])


def matched_baselines(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """hasa·sel against uniform·FedRolex and uniform·FjORD on the worst and tail client, paired over
    seeds, in each federation: one exploratory Holm family (:data:`BASELINES_FAMILY`) over all rows."""
    finals = pd.concat([f[f["final"]] for f in frames.values()], ignore_index=True)
    pairs = [(on(t, e), on(c, e)) for e in frames for t, c in MATCHED]
    out = compare_family(finals, pairs, BASELINES_FAMILY, metrics=MATCHED_METRICS)
    return out.assign(federation=[federation_name(e) for e in frames for _ in MATCHED for _ in MATCHED_METRICS])


# ---------------------------------------------------------------------------------------------
# The cross-benchmark table: does each Medium verdict carry over?
# ---------------------------------------------------------------------------------------------

def medium_verdicts(results_dir: Path) -> pd.DataFrame | None:
    """Medium's verdicts (``claims_verdicts.csv``, written by notebook 06), or None before they exist."""
    path = current(results_dir / "claims_verdicts.csv")
    return pd.read_csv(path, dtype={"claim": str}) if path.is_file() else None


def _primary(claim: str, protocol: str):
    """The first declared primary of a claim under a protocol (the number the headline shows)."""
    return next(p for p in PRIMARIES if p.claim == claim and p.protocol == protocol)


def cross_benchmark_table(verdicts: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """One row per claim of the second benchmark (1, 3) and protocol: per benchmark (``verdicts``:
    name -> its :func:`claim_verdicts` frame, None where not computed; the first is the reference,
    Medium) the claim's verdict and its first primary (difference, simultaneous CI, n); per other
    benchmark whether the reference's verdict carries over (the same verdict; None while the
    reference is not computed); and the row in words (:func:`cross_benchmark_sentence`)."""
    names = list(verdicts)
    rows = []
    for claim in CROSS_CLAIMS:
        for protocol in ("full", "selective"):
            p = _primary(claim, protocol)
            row: dict[str, Any] = {"claim": claim, "protocol": protocol,
                                   "primary test": f"{p.treatment} − {p.controls[0]}, {p.metric}", "effect": p.effect}
            for name, v in verdicts.items():
                hit = None if v is None else v[(v["claim"] == claim) & (v["protocol"] == protocol)]
                r = None if hit is None or hit.empty else hit.iloc[0]
                row.update({f"{name}: verdict": NOT_COMPUTED if r is None else r["verdict"],
                            **{f"{name}: {k}": np.nan if r is None else float(r[f"{k} 1"])
                               for k in ("diff", "ci_low", "ci_high")},
                            f"{name}: n": np.nan if r is None else int(r["n"])})
            reference = row[f"{names[0]}: verdict"]
            for name in names[1:]:
                mine = row[f"{name}: verdict"]
                row[f"{name}: carries over"] = None if NOT_COMPUTED in (reference, mine) else reference == mine
            row["reading"] = cross_benchmark_sentence(row, names)
            rows.append(row)
    return pd.DataFrame(rows)


def _number(row: dict[str, Any], name: str) -> str:
    """One benchmark's first primary: +0.12 pp [-0.30, +0.54], n = 30."""
    return (f"{pp(row[f'{name}: diff'])} {interval(row[f'{name}: ci_low'], row[f'{name}: ci_high'])}, "
            f"n = {int(row[f'{name}: n'])}")


def _finding(row: dict[str, Any], name: str) -> str:
    """One benchmark's verdict with its number: on Medium **verdict** (+0.12 pp [-0.30, +0.54], n = 30)."""
    if row[f"{name}: verdict"] == NOT_COMPUTED:
        return f"on {name} {NOT_COMPUTED}"
    return f"on {name} **{row[f'{name}: verdict']}** ({_number(row, name)})"


def cross_benchmark_sentence(row: dict[str, Any], names: Sequence[str]) -> str:
    """A row of the cross-benchmark table in words: the claim, protocol and primary test, each
    benchmark's verdict with its number, and per other benchmark whether the reference's verdict
    carries over (or that this is open while a verdict is not computed)."""
    reference, others = names[0], names[1:]
    parts = []
    for name in others:
        carries = row[f"{name}: carries over"]
        said = ("whether it carries over is open" if carries is None or pd.isna(carries) else
                "the Medium verdict carries over" if carries else "the Medium verdict does not carry over")
        parts.append(f"{_finding(row, name)}: {said}")
    why = (f" ({reference}'s verdicts are written to `results/claims_verdicts.csv` by notebook 06)"
           if row[f"{reference}: verdict"] == NOT_COMPUTED else "")
    return (f"Claim {row['claim']} under `{row['protocol']}` ({row['primary test']}): {_finding(row, reference)}"
            f"{why}; " + "; ".join(parts) + ".")


def cross_benchmark_markdown(table: pd.DataFrame) -> str:
    """The cross-benchmark table as Markdown (per benchmark: verdict, difference and simultaneous CI,
    n; per other benchmark whether the reference's verdict carries over), then its sentences."""
    names = [c.removesuffix(": verdict") for c in table.columns if c.endswith(": verdict")]

    def cell(r: pd.Series, name: str) -> str:
        verdict = r[f"{name}: verdict"]
        return NOT_COMPUTED if verdict == NOT_COMPUTED else f"**{verdict}** {_number(r, name)}"

    def carried(v: Any) -> str:
        return "open" if v is None or pd.isna(v) else ("yes" if v in (True, "True") else "no")
    head = ["claim", "protocol", "primary test", *names, *(f"carries over to {n}" for n in names[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(r["claim"]), f"`{r['protocol']}`", r["primary test"],
                                 *(cell(r, n) for n in names),
                                 *(carried(r[f"{n}: carries over"]) for n in names[1:])]) + " |"
              for _, r in table.iterrows()]
    return "\n".join(lines) + "\n\n" + "\n\n".join(table["reading"]) + "\n"


def cross_benchmark_text(results_dir: Path) -> str:
    """The README's cross-benchmark block, generated from ``results/shakespeare_cross_benchmark.csv``
    (notebook 11); a sentence saying it is not computed yet while that file is absent."""
    path = current(results_dir / "shakespeare_cross_benchmark.csv")
    if not path.is_file():
        return ("The cross-benchmark comparison (notebook 11: Medium's verdicts beside Shakespeare's) has not "
                "been computed into `results/` yet: `make reproduce` computes it.")
    return cross_benchmark_markdown(pd.read_csv(path, dtype={"claim": str}))


@house_style
def plot_cross_benchmark(table: pd.DataFrame, note: str = ""):
    """The cross-benchmark table as a picture: one panel per claim, one row per (protocol,
    benchmark), each claim's first primary with its simultaneous CI coloured by the claim's verdict
    on that benchmark, the effect it is judged against as a green tick, zero dashed; linear axes. A
    benchmark whose verdict is not computed yet keeps its row, empty and labelled so."""
    import matplotlib.pyplot as plt
    names = [c.removesuffix(": verdict") for c in table.columns if c.endswith(": verdict")]
    claims = list(dict.fromkeys(table["claim"]))
    fig, axes = plt.subplots(1, len(claims), figsize=(5.2 * len(claims), 0.38 * len(names) * 2 + 1.6),
                             sharey=True, squeeze=False)
    seen = {}
    for ax, claim in zip(axes[0], claims):
        labels = []
        for y, (r, name) in enumerate((r, n) for _, r in table[table["claim"] == claim].iterrows() for n in names):
            verdict = r[f"{name}: verdict"]
            labels.append(f"{name}, {r['protocol']}" + (f" ({NOT_COMPUTED})" if verdict == NOT_COMPUTED else ""))
            if verdict != NOT_COMPUTED:
                d = r[f"{name}: diff"]
                seen[verdict] = ax.errorbar(d, y, xerr=[[d - r[f"{name}: ci_low"]], [r[f"{name}: ci_high"] - d]],
                                            fmt="o", capsize=3, color=VERDICT_COLOURS[verdict])
            ax.plot(r["effect"], y, "|", color=PAPER_COLOUR, ms=12, mew=2)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        tests = " / ".join(dict.fromkeys(table.loc[table["claim"] == claim, "primary test"]))
        ax.set_title(f"claim {claim}\n{tests}")
    fig.supxlabel(f"difference (pp); error bars: {CI_WORDS}; green tick: the effect judged against")
    finish(fig, note)
    if seen:
        fig.legend([seen[v] for v in VERDICT_COLOURS if v in seen], [v for v in VERDICT_COLOURS if v in seen],
                   loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(seen), title="verdict (colour)")
    return fig


# ---------------------------------------------------------------------------------------------
# uniform beside the published Shakespeare numbers
# ---------------------------------------------------------------------------------------------

def model_difference(cfg: RunConfig) -> str:
    """How our Shakespeare model and task differ from LEAF's and FedAvg's, read from ``cfg``."""
    width = units_of(cfg.budget, cfg.hidden_dim)
    return (f"1-layer LSTM, embedding and hidden width {cfg.emb_dim} / {cfg.hidden_dim}, of which uniform trains "
            f"and is evaluated on the width-{cfg.budget:g} slice ({width} hidden units); every one of the "
            f"{WINDOW} positions of a window is a target (context of 1 to {WINDOW} characters), where LEAF "
            f"predicts only the character after {WINDOW}; non-overlapping windows, a seeded {cfg.test_frac:.0%} "
            f"of each role's windows held out (no test character is trained on); {cfg.local_epochs} local "
            f"epoch of SGD per round (lr {cfg.lr:g}, batch {cfg.batch_size})")


def uniform_runs(records: dict[str, Sequence[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Experiment -> its uniform runs."""
    return {e: [r for r in recs if r["method"] == on("uniform", e)] for e, recs in records.items()}


def uniform_targets(records: dict[str, Sequence[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    """Experiment -> each client's test targets (characters) in the splits of its uniform runs."""
    return {e: test_targets(RunConfig.from_dict(runs[0]["config"]), sorted({r["seed"] for r in runs}))
            for e, runs in uniform_runs(records).items()}


def reference_table(records: dict[str, Sequence[dict[str, Any]]], targets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """uniform's Shakespeare accuracy beside :data:`PUBLISHED`: per federation, uniform's mean client
    accuracy (mean over seeds, its sd in ``accuracy (%) sd``) and its accuracy weighted by each
    client's test characters (``targets``: experiment -> :func:`hasa_results.frames.test_targets`);
    then each
    published number with what it is, whether it was checked here, its model and data."""
    rows = []
    for e, uniform in uniform_runs(records).items():
        cfg = RunConfig.from_dict(uniform[0]["config"])
        cdf = clients_frame(uniform).merge(targets[e], on=["seed", "client"])
        per_seed = cdf.groupby("seed").apply(lambda g: pd.Series(
            {"mean": g["accuracy"].mean(), "weighted": np.average(g["accuracy"], weights=g["n_test"])}),
            include_groups=False)
        clients = (f"every role with at least {MIN_ROLE_CHARS:,} characters" if cfg.partition == "leaf" else
                   f"the {cfg.num_clients} largest roles, one per play")
        rows.append({"source": f"ours: uniform, {federation_name(e)}", "accuracy (%)": per_seed["mean"].mean(),
                     "accuracy (%) sd": per_seed["mean"].std(), "weighted by test characters (%)":
                     per_seed["weighted"].mean(), "seeds": len(per_seed),
                     "what": "mean client test accuracy after the last round (the paper's metric)",
                     "status": "measured", "model": model_difference(cfg),
                     "data": f"{len(uniform[0]['clients'])} clients ({clients}), {cfg.participation:.0%} per "
                             f"round, {cfg.rounds} rounds"})
    rows += [{"source": name, **entry} for name, entry in PUBLISHED.items()]
    return pd.DataFrame(rows).set_index("source")


def reference_sentence(table: pd.DataFrame) -> str:
    """uniform's accuracy beside the published numbers in words: ours per federation, each published
    number with what it is and whether it was verified, and why the numbers are not comparable."""
    ours = table[table["status"] == "measured"]
    said = "; ".join(f"{name.removeprefix('ours: uniform, ')}: {r['accuracy (%)']:.1f} % (client mean; "
                     f"{r['weighted by test characters (%)']:.1f} % weighted by test characters)"
                     for name, r in ours.iterrows())
    published = "; ".join(f"{name}: " + (f"{r['accuracy (%)']:g} %, {r['what']} ({r['status']})"
                                         if pd.notna(r["accuracy (%)"]) else r["status"])
                          for name, r in table[table["status"] != "measured"].iterrows())
    return (f"**uniform on Shakespeare**: {said}. **Published**: {published}. Not comparable as they stand: "
            f"ours is {ours['model'].iloc[0]}; theirs a 2-layer LSTM of 256 units predicting one character per "
            "80-character window, on LEAF's parse and split.")
