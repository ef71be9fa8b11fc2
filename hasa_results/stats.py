"""Statistics over seeds: paired tests with t-based CIs, Holm within a named family, power and
minimum detectable effect, sign flips, per-client differences, mean variants, score validity.
Pure functions of frames and arrays.

Imports: numpy, pandas, scipy.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats


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


NOT_TESTED = "not tested: every paired difference is 0"


def all_zero(d: Sequence[float]) -> bool:
    """Whether every paired difference is 0 (to float rounding): a test of them tests nothing."""
    return bool(np.allclose(np.asarray(d, float), 0))


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
    if all_zero(d):
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


def sign_vectors(n: int, draws: int = 20_000, seed: int = 0) -> np.ndarray:
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
    null = sign_vectors(len(d)) @ d / len(d)
    tol = 1e-12 * max(1.0, abs(d.mean()))
    if alternative == "greater":
        return float(np.mean(null >= d.mean() - tol))
    return float(np.mean(np.abs(null) >= abs(d.mean()) - tol))


def p_value(p: float, name: str = "p") -> str:
    """A p-value with two significant figures, never in e-notation: p = 0.0087, p < 0.001."""
    if math.isnan(p):
        return f"{name} n/a"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {float(f'{p:.2g}'):g}"


def compare_family(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], family: str,
                   metrics: Sequence[str] = ("mean", "worst", "tail"),
                   effect: float | None = None) -> pd.DataFrame:
    """The paired statistics (:func:`paired_stats`) of every (treatment, control) pair on every
    metric, seeds matched, as ONE named Holm family: ``p_holm`` adjusts the t-test p-values over
    all rows of this table and nowhere else, and ``family`` names it, so an adjusted p quoted in
    prose can be traced to its family. ``verdict`` reads the adjusted p together with the power:
    'higher' / 'lower' (p_holm < 0.05, by the sign of the difference), or 'neither confirmed nor
    refuted' (with the minimum detectable effect). A degenerate row, whose
    paired differences are all 0 (e.g. both methods' worst client at 0 % in every seed), tests
    nothing: it stays in the table but not in the family (``family`` :data:`NOT_TESTED`, ``p_holm``
    1, verdict 'not tested'), and Holm counts only the others."""
    wide = {m: df.pivot(index="seed", columns="method", values=m) for m in metrics}
    rows = []
    for treatment, control in pairs:
        for m in metrics:
            w = wide[m][[treatment, control]].dropna()
            rows.append({"family": family, "comparison": f"{treatment} − {control}", "metric": m,
                         **paired_stats(w[treatment], w[control], effect),
                         "tested": not all_zero(w[treatment] - w[control])})
    out = pd.DataFrame(rows)
    tested = out.pop("tested")
    out["p_holm"] = 1.0
    out.loc[tested, "p_holm"] = holm(out.loc[tested, "p_t"].to_numpy())
    out.loc[~tested, "family"] = NOT_TESTED
    out["verdict"] = [_holm_verdict(r) for r in out.itertuples()]
    return out


def _holm_verdict(r) -> str:
    """A :func:`compare_family` row in words: not tested, higher / lower (Holm p < 0.05), or
    neither (with its MDE80)."""
    p = p_value(r.p_holm, "Holm p")
    if r.family == NOT_TESTED:
        return NOT_TESTED
    if r.p_holm < 0.05:
        return f"{'higher' if r.diff > 0 else 'lower'} ({p})"
    return f"neither confirmed nor refuted ({p}; MDE80 = {r.mde80:.2f})"


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
    """Per method (in order of appearance): each metric's mean over seeds and its standard deviation
    (column ``X sd``; the Markdown table shows ``X ± sd``), the number of seeds and the mean budget
    used."""
    g = df.groupby("method", sort=False)
    out = pd.DataFrame({c: col for m in metrics for c, col in ((m, g[m].mean()), (f"{m} sd", g[m].std()))})
    out["seeds"] = g.size()
    if "budget_frac" in df:
        out["budget used"] = g["budget_frac"].mean()
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
            rows.append({"score": name, "rho_need": np.nan, "p_perm": np.nan, "rho_size": np.nan,
                         "r2_logsize": np.nan, "seeds": 0, "clients": k, "permutations": len(perms)})
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
