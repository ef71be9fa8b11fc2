"""The house style of every figure, and the plots more than one notebook draws.

One style (:data:`STYLE`, applied by :func:`house_style` to every plotting function: font sizes
are set there and nowhere else), one colour per method everywhere (:func:`colour`: a colour-blind
safe palette, Okabe-Ito then Paul Tol's muted set), one label for error bars (:data:`CI_LABEL`),
linear axes unless a plot says why not, and one ending (:func:`finish`).

Imports: :mod:`hasa_results.stats`.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hasa_results.stats import paired_stats

STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "figure.titlesize": 8, "axes.spines.top": False, "axes.spines.right": False,
         "legend.frameon": False}
"""Matplotlib settings of every figure of the artifact (:func:`house_style`)."""

METHOD_COLOURS = {
    "uniform": "#000000", "hasa": "#0072B2", "hasa·sel": "#56B4E9", "reverse": "#D55E00",
    "reverse·sel": "#E69F00", "uniform·FedRolex": "#CC79A7", "uniform·FjORD": "#009E73",
    "uniform·FedDropout": "#999933", "smallest": "#999999", "full-width": "#117733",
    "hasa[feature_js]": "#332288", "hasa[need]": "#AA4499", "hasa[loss]": "#44AA99",
    "hasa[random #0]": "#DDCC77", "hasa_levels·sel[js_targets]": "#882255",
}
"""The colour of each method the figures show most (Okabe-Ito, then Paul Tol's muted palette)."""
_MORE = ("#CC6677", "#88CCEE", "#882255", "#44AA99", "#AA4499", "#DDCC77", "#332288", "#117733")

CI_LABEL = "error bars: 95 % CI over seeds"
SIGN_COLOURS = {1: "#0072B2", 0: "#999999", -1: "#D55E00"}
"""Above zero (or in the paper's direction), neither, below zero: blue, grey, vermillion."""
PAPER_COLOUR = "#009E73"
VERDICT_COLOURS = {"reproduced": "#009E73", "smaller than claimed": "#0072B2", "inconclusive": "#999999",
                   "not reproduced": "#CC79A7", "contradicted": "#D55E00"}
"""One colour per verdict of the plan, best outcome for the claim first."""
"""The paper's number, wherever a figure shows it."""


def colour(method: str) -> str:
    """A method's colour, the same in every figure: its entry of :data:`METHOD_COLOURS`; else the
    entry without ``·sel`` (a score variant keeps its colour in both protocols' panels); else a
    colour of the palette chosen by a hash of the name (stable across runs and figures)."""
    for name in (method, method.replace("·sel", "")):
        if name in METHOD_COLOURS:
            return METHOD_COLOURS[name]
    return _MORE[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(_MORE)]


def finish(fig, note: str = ""):
    """The one ending of every figure: ``note`` (the profile and seeds) as its small title, then a
    tight layout. Returns ``fig``."""
    if note:
        fig.suptitle(note)
    fig.tight_layout()
    return fig


def house_style(plot: Callable) -> Callable:
    """Run a plotting function under :data:`STYLE` (a context: no global setting is changed)."""
    @functools.wraps(plot)
    def styled(*args, **kwargs):
        import matplotlib.pyplot as plt
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)
    return styled


@house_style
def plot_paired(df: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                metrics: Sequence[str] = ("mean", "worst", "tail"), seeds_note: str = ""):
    """Paired view, one panel per metric and one row per (treatment, control) pair: each seed's
    difference (dots, the treatment's colour) with the mean and its t-based 95% CI (black), in
    accuracy points."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 1.3 + 0.5 * len(pairs)),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        wide = df.pivot(index="seed", columns="method", values=m)
        for y, (t, c) in enumerate(pairs):
            d = (wide[t] - wide[c]).dropna()
            st = paired_stats(d, np.zeros(len(d)))
            ax.scatter(d, y + np.linspace(-0.2, 0.2, len(d)), s=9, alpha=0.5, color=colour(t))
            ax.errorbar(st["diff"], y, xerr=[[st["diff"] - st["ci_low"]], [st["ci_high"] - st["diff"]]],
                        fmt="D", color="black", capsize=4, ms=5)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(pairs)), [f"{t} − {c}" for t, c in pairs])
        ax.set_ylim(len(pairs) - 0.4, -0.6)
        ax.set_title(f"{m} accuracy (pp)")
        ax.set_xlabel(f"dots: seeds; {CI_LABEL}")
    return finish(fig, seeds_note)


@house_style
def plot_per_client_differences(table: pd.DataFrame, treatment: str, control: str, seeds_note: str = ""):
    """Per-client paired difference (mean, 95% t-CI) ordered by client size, each client labelled
    with its width under both methods (control -> treatment): where does the gain come from?"""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(table) + 1.2))
    for y, (client, r) in enumerate(table.iterrows()):
        color = "#0072B2" if r["diff"] > 0 else "#D55E00"
        ax.errorbar(r["diff"], y, xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]], fmt="o",
                    color=color, capsize=3)
        ax.annotate(f"w {r[f'width {control}']:.2f} → {r[f'width {treatment}']:.2f}", (1.01, y),
                    xycoords=("axes fraction", "data"), va="center")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(table)), [f"{c} (n={r['n_train']:,.0f})" for c, r in table.iterrows()])
    ax.invert_yaxis()
    ax.set_xlabel(f"{treatment} − {control}, client test accuracy (pp); {CI_LABEL}")
    ax.set_title(f"per client, largest first{'; ' + seeds_note if seeds_note else ''}")
    return finish(fig)


@house_style
def plot_gap_by_round(gaps: dict[str, pd.DataFrame], seeds_note: str = ""):
    """The paired gap (mean, 95% t-CI) against round, one line per comparison."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, g in gaps.items():
        ax.errorbar(g.index, g["diff"], yerr=[g["diff"] - g["ci_low"], g["ci_high"] - g["diff"]],
                    marker="o", capsize=3, label=name, color=colour(name.split(" − ")[0]))
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel("round")
    ax.set_ylabel("paired gap, mean accuracy (pp)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(CI_LABEL)
    ax.legend()
    return finish(fig, seeds_note)


@house_style
def plot_allocations(widths: pd.DataFrame, title: str = ""):
    """Each client's width (rows: clients, largest first; columns: policies) as grouped bars."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 * len(widths) + 2.5, 3.4))
    widths.plot.bar(ax=ax, width=0.8, color=[colour(str(c)) for c in widths.columns])
    ax.set_ylabel("width w_k")
    ax.set_xlabel("")
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="x", rotation=20)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return finish(fig, title)
