"""Numbers in words, in the one number style of the README, the report and the notebooks'
conclusions: differences in accuracy points with a sign and two decimals (one below 10 pp...
one decimal from 10 pp), CIs in brackets, p-values with two significant figures and never in
e-notation ("p < 0.001"), and one paired test as a phrase.

Imports: :mod:`hasa_results.experiments` (the paper's numbers).
"""
from __future__ import annotations

import math

import pandas as pd

from hasa_results.experiments import PAPER_GAIN
from hasa_results.stats import NOT_TESTED, p_value


def pp(x: float) -> str:
    """A difference in accuracy points: +0.38 pp, -12.6 pp."""
    return f"{x:+.2f} pp" if abs(x) < 10 else f"{x:+.1f} pp"


def num(x: float) -> str:
    """A signed number in the style of :func:`pp`, without the unit."""
    return f"{x:+.2f}" if abs(x) < 10 else f"{x:+.1f}"


def amount(x: float, digits: int = 2) -> str:
    """An unsigned number with ``digits`` decimals, or "n/a" when it is undefined (NaN)."""
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def interval(low: float, high: float) -> str:
    """A confidence interval: [+0.20, +0.56]."""
    return f"[{num(low)}, {num(high)}]"



def say(tests: pd.DataFrame, comparison: str, metric: str = "mean", *, ci: bool = True, family: bool = False,
        power: bool = False, wins: bool = False, verdict: bool = False) -> str:
    """One paired test in words, for a notebook's generated conclusion: the difference in pp, then
    (as asked) its unadjusted 95 % CI, the Holm p (with its family), n / power / MDE80, the wins, the
    verdict. ``tests`` is a :func:`compare_family` table, indexed by (comparison, metric) or not."""
    t = tests if isinstance(tests.index, pd.MultiIndex) else tests.set_index(["comparison", "metric"])
    r = t.loc[(comparison, metric)]
    if r["verdict"] == NOT_TESTED:
        return f"{pp(r['diff'])} ({NOT_TESTED})"
    parts = [f"95 % CI {interval(r['ci_low'], r['ci_high'])}"] if ci else []
    parts.append(p_value(r["p_holm"], "Holm p") + (f" in family '{r['family']}'" if family else ""))
    if power:
        parts.append(f"n = {r['n']}, power at {pp(PAPER_GAIN)} = {r['power_at_effect']:.2f}, "
                     f"MDE80 = {r['mde80']:.2f} pp")
    if wins:
        parts += [f"wins {r['wins']}", f"MDE80 = {r['mde80']:.2f} pp"]
    return f"{pp(r['diff'])} ({', '.join(parts)})" + (f": {r['verdict']}" if verdict else "")
