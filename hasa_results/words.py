"""Numbers in words: one paired test as a phrase, in the one number style of the README, the
report and the notebooks' conclusions.

Imports: :mod:`hasa_results.experiments` (the paper's numbers).
"""
from __future__ import annotations

import pandas as pd

from hasa_results.experiments import PAPER_GAIN


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
