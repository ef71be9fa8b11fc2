"""The analysis plan, declared as data before the primary runs were computed, and the verdict scheme.

Each claim of the paper has one declared primary test per protocol and metric (:data:`PRIMARIES`):
its contrast, metric, protocol, seeds and the effect it is judged against (the paper's number, or
the smallest effect of interest declared here where the paper gives none). The headline is
computed from exactly these tests (``claims.primary_tests``; a test fails when the headline uses a
test this plan does not name); every other table of the artifact is exploratory.

* **One confirmatory family**, the 16 primaries, adjusted by **Bonferroni** (m = 16): not Holm,
  because the verdict reads sign and size off the confidence interval, and Bonferroni's
  simultaneous intervals (level 1 - 0.05/m) agree with its adjusted p (the interval excludes 0
  exactly when the adjusted p < 0.05), where Holm's step-down p has no matching interval.
* **Verdicts state size, not only sign** (:func:`verdict`): *reproduced* (significant in the
  paper's direction, the interval reaches the paper's effect), *smaller than claimed*
  (significant, the interval excludes the paper's effect), *not reproduced* (the interval holds 0
  and excludes the paper's effect), *contradicted* (significant against), *inconclusive* (the
  interval holds both 0 and the paper's effect; with the minimum detectable effect at 80 % power).
  A claim's verdict under a protocol is the worse of its two tests' (:func:`claim_verdict`).
* **Claim 2 is an intersection-union test**: "the strongest worst/tail accuracy among the
  matched baselines" holds only if HASA beats every one of the paper's four baselines; each
  comparison is tested at the family's level, and the verdict is the weakest one's.
* **Protocols**: ``full`` is the re-implementation's original-FedAvg aggregation (FedProC
  ``strategies/HASA.py``, ``hasa_aggregation = "full"``: an untrained coordinate enters the
  average with the value it was sent); ``selective`` averages each coordinate over the clients
  that trained it (the same file's other option, and the matched baselines' rule). The paper's
  text gives neither formula, so every claim is judged under both.

Imports: :mod:`hasa_core`, :mod:`hasa_results.experiments`, :mod:`hasa_results.stats`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from hasa_core import config, many_clients_config
from hasa_results.experiments import PAPER_ACCURACY, PAPER_GAIN, POWER_SEEDS, method_label
from hasa_results.stats import power_paired_t

ALPHA = 0.05
FAMILY = "Confirmatory (the primaries)"
TEXT_SESOI = PAPER_GAIN / 2
"""The smallest effect of interest of a text claim without a number in the paper: half of claim 1's
+0.50 pp (declared before computing)."""
SLOPE_SESOI = 1.0
"""Claim 4's smallest effect of interest: 1 pp more gain over uniform per unit of the score's rank
correlation with the need for width (from a score that tracks nothing to one that tracks it
perfectly: 1 pp; declared before computing)."""
PROTOCOL_ORIGIN = ("FedProC strategies/HASA.py (commit 90efd910): class HASA's option hasa_aggregation, 'full' by "
                   "default (its help text: 'Published original-FedAvg or matched-baseline protocol'; "
                   "aggregate_client_updates fills untrained coordinates with the value sent, commented 'Paper "
                   "original-FedAvg protocol') or 'selective' (the parent ptFL's average over the clients that "
                   "trained a coordinate)")
"""Where the two protocols come from. The re-implementation calls ``full`` the paper's; no passage of
the paper we have (its abstract) says which protocol it used."""
BASELINES = ("uniform", "uniform·FedRolex", "uniform·FedDropout", "uniform·FjORD")
"""The paper's matched-budget partial-training baselines, each at uniform width B: HeteroFL's
static slices (= uniform), FedRolex, Federated Dropout (per client: FjORD's "extended FD"), FjORD."""


@dataclass(frozen=True)
class Primary:
    """One declared primary test. ``treatment`` against each of ``controls`` (one control: a
    paired test; several: an intersection-union test), on ``metric``, over the ``experiment``'s
    seeds, under ``protocol``; judged against ``effect`` (``effect_from``: the paper or the
    declared smallest effect of interest). ``kind``: ``paired`` or ``dependence`` (claim 4: the
    per-seed slope of the gain over uniform on the score's tracking of the need for width)."""
    claim: str
    statement: str
    treatment: str
    controls: tuple[str, ...]
    metric: str
    protocol: str
    experiment: str
    effect: float
    effect_from: str
    kind: str = "paired"

    @property
    def test(self) -> str:
        """The test's name: contrast, metric, protocol."""
        against = self.controls[0] if len(self.controls) == 1 else "each matched baseline"
        what = "slope of (hasa[score] − uniform) on tracking" if self.kind == "dependence" else \
            f"{self.treatment} − {against}"
        return f"{what}, {self.metric}, {self.protocol}"


STATEMENTS = {
    "1": f"HASA raises mean client accuracy over uniform allocation ({PAPER_ACCURACY['uniform']:.2f} % -> "
         f"{PAPER_ACCURACY['hasa']:.2f} %) and improves worst-client accuracy on average",
    "2": "HASA has the strongest worst- and tail-client accuracy among matched-budget partial-training baselines",
    "3": "assigning smaller subnets to more heterogeneous clients (reversing HASA) degrades mean and tail accuracy",
    "4": "in the cross-domain image study, the gain depends on how well the score reflects the clients' "
         "need for width",
}


def _sel(method: str, protocol: str) -> str:
    """A method's label under ``protocol`` (``·sel`` where its rows differ by protocol)."""
    return method if protocol == "full" else method.replace("[", "·sel[", 1) if "[" in method else f"{method}·sel"


def _primaries() -> tuple[Primary, ...]:
    out = []
    for protocol in ("full", "selective"):
        hasa = _sel("hasa", protocol)
        baselines = tuple(_sel(b, protocol) if b == "uniform·FedDropout" else b for b in BASELINES)
        out += [Primary("1", STATEMENTS["1"], hasa, ("uniform",), "mean", protocol, "claims", PAPER_GAIN, "paper"),
                Primary("1", STATEMENTS["1"], hasa, ("uniform",), "worst", protocol, "claims", TEXT_SESOI,
                        "smallest effect of interest")]
        out += [Primary("2", STATEMENTS["2"], hasa, baselines, m, protocol, "claims", TEXT_SESOI,
                        "smallest effect of interest") for m in ("worst", "tail")]
        out += [Primary("3", STATEMENTS["3"], hasa, (_sel("reverse", protocol),), m, protocol, "claims", TEXT_SESOI,
                        "smallest effect of interest") for m in ("mean", "tail")]
        out += [Primary("4", STATEMENTS["4"], hasa, ("uniform",), m, protocol, "claim4", SLOPE_SESOI,
                        "smallest effect of interest", "dependence") for m in ("mean", "worst")]
    return tuple(sorted(out, key=lambda p: (p.claim, p.protocol != "full")))


PRIMARIES = _primaries()
"""The 16 primary tests: claims 1-4 x protocols x two metrics each, 30 paired seeds (seeds 0-29)."""

SECOND_BENCHMARK_FAMILY = "Second benchmark (Shakespeare)"
SECOND_BENCHMARK_RUNS = {"shakespeare": config("paper", "shakespeare"),
                         "shakespeare_leaf": many_clients_config("paper", "shakespeare")}
"""The second benchmark's experiments and their uniform runs, whose labels carry the federation
(LEAF's: roles and participation) that every method label of that experiment carries too."""


def federation_suffix(experiment: str) -> str:
    """What every method label of a second-benchmark experiment carries after the method: its
    uniform run's label without ``uniform`` (LEAF's: `` (LEAF roles, 10%/round)``; the paper-shaped
    federation's: nothing)."""
    return method_label(SECOND_BENCHMARK_RUNS[experiment]).removeprefix("uniform")


def _on(p: Primary, experiment: str) -> Primary:
    """Primary ``p`` on another experiment: the same test, its methods under that experiment's labels."""
    suffix = federation_suffix(experiment)
    return replace(p, experiment=experiment, treatment=p.treatment + suffix,
                   controls=tuple(c + suffix for c in p.controls))


SECOND_BENCHMARK = tuple(_on(p, e) for e in SECOND_BENCHMARK_RUNS for p in PRIMARIES if p.claim in ("1", "3"))
"""The declared sensitivity analysis "second benchmark" (declared before any Shakespeare run was
computed): claims 1 and 3's primaries, unchanged (contrast, metric, protocol, the effect judged
against), on both Shakespeare federations: ``shakespeare`` (8 roles, full participation, seeds
0-29) and ``shakespeare_leaf`` (LEAF's roles, 10 % per round, seeds 0-9). 16 tests, one Bonferroni
family of their own (m = 16), judged with :func:`verdict`; a Medium verdict *carries over* when the
same claim and protocol get the same verdict there. The matched baselines on Shakespeare (FedRolex,
FjORD) are exploratory."""

SENSITIVITY = (
    ("calibrated stopping round", "claims 1-3", "every primary re-tested at the evaluation round where uniform's "
     f"mean accuracy, averaged over seeds, is nearest the paper's {PAPER_ACCURACY['uniform']:.2f} % (chosen from "
     "uniform's curve only)"),
    ("specification curve", "claim 1", "hasa − uniform in 12 setups that each vary one of our choices (model size, "
     "local epochs, learning rate, batch, vocabulary cut-off, rounds, momentum), joint sign-flip test over 10 seeds"),
    ("second benchmark", "claims 1 and 3", "the same tests on Shakespeare (clients = speaking roles), two federations"),
    ("baselines as published", "claim 2", "HeteroFL's and FedRolex's official aggregation; FedRolex and Federated "
     "Dropout evaluated on the global full model, as their code does"),
)
"""The declared sensitivity analyses; every other table is exploratory."""

VERDICTS = ("reproduced", "smaller than claimed", "inconclusive", "not reproduced", "contradicted")
"""The verdicts, from the best outcome for the paper's claim to the worst."""


def family_level(m: int = len(PRIMARIES), alpha: float = ALPHA) -> float:
    """The per-test level of the confirmatory family (Bonferroni): alpha / m."""
    return alpha / m


def simultaneous(d: Sequence[float], effect: float, m: int = len(PRIMARIES), alpha: float = ALPHA) -> dict:
    """The paired test of differences ``d`` (one per seed) inside a Bonferroni family of ``m``: the
    mean with its simultaneous CI (t-based, level 1 - alpha/m), the unadjusted two-sided t p, the
    adjusted p = min(1, m p) (below alpha exactly when the CI excludes 0), the minimum detectable
    effect at 80 % power at level alpha/m (``mde80``), and the power at ``effect``."""
    d = np.asarray(d, float)
    n, level = len(d), family_level(m, alpha)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = stats.t.ppf(1 - level / 2, n - 1) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)) if sd > 0 else float(mean == 0)
    mde = _mde(sd, n, level)
    return {"diff": mean, "ci_low": mean - half, "ci_high": mean + half, "ci_level": 1 - level, "p_unadjusted": p,
            "p_adjusted": min(1.0, m * p), "n": n, "sd_diff": sd, "mde80": mde,
            "power_at_effect": power_paired_t(effect, sd, n, level) if sd > 0 else float("nan")}


def _mde(sd: float, n: int, level: float) -> float:
    from scipy.optimize import brentq
    if not sd > 0 or n < 2:
        return float("nan")
    return float(brentq(lambda e: power_paired_t(e, sd, n, level) - 0.8, 1e-9 * sd, 50 * sd))


def verdict(ci_low: float, ci_high: float, effect: float) -> str:
    """A primary's verdict from its simultaneous CI and the effect it is judged against (> 0, in the
    paper's direction): sign and size (:data:`VERDICTS`)."""
    if ci_low > 0:
        return "reproduced" if ci_high >= effect else "smaller than claimed"
    if ci_high < 0:
        return "contradicted"
    return "inconclusive" if ci_high >= effect else "not reproduced"


def claim_verdict(verdicts: Sequence[str]) -> str:
    """One verdict for a claim under one protocol from its two primary tests: the worse of the two
    for the claim (:data:`VERDICTS` order), because each claim asserts both parts (claim 1: the
    mean and the worst client; claim 2: worst and tail; claim 3: mean and tail; claim 4: the
    dependence on the mean and on the worst client)."""
    return max(verdicts, key=VERDICTS.index)


def plan_table() -> pd.DataFrame:
    """The plan as the report's first table: per primary, the claim, the paper's statement, the
    test (contrast, metric, protocol), the seeds, the effect it is judged against and its origin,
    and the decision rule."""
    rows = [{"claim": p.claim, "paper says": p.statement, "primary test": p.test,
             "seeds": f"0–{POWER_SEEDS['paper'] - 1} (paired)", "judged against": f"{p.effect:+.2f}" +
             (" pp per unit ρ" if p.kind == "dependence" else " pp"), "from": p.effect_from,
             "rule": "intersection-union: every baseline" if len(p.controls) > 1 else
             ("per-seed slope, t over seeds" if p.kind == "dependence" else "paired t over seeds")}
            for p in PRIMARIES]
    return pd.DataFrame(rows)
