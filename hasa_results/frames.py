"""Records as pandas frames: one row per run, per evaluation round, per client; the clients'
descriptions, allocations and scores.

Imports: :mod:`hasa_core`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hasa_core import RunConfig, Task, compute_scores, load_task, partition, plan, summarize_accuracies


def method_of(rec: dict[str, Any]) -> str:
    return rec["method"] if "method" in rec else rec["config"]["policy"]


def records_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None,
                  last: int = 1) -> pd.DataFrame:
    """One row per run: method label, seed, mean / worst / tail accuracy (%), budget use.

    ``last = 1``: after the final round (the reported metric); ``last = k``: each client's
    accuracy averaged over the last k evaluations first (a check that the verdict does not hinge
    on where training stops)."""
    label = label or method_of
    rows = []
    for r in records:
        acc = np.mean([c["accuracy"] for c in r["curve"][-last:]], axis=0)
        rows.append({"method": label(r), "seed": r["seed"],
                     **{k: 100 * v for k, v in summarize_accuracies(acc).items()},
                     "budget_frac": r["budget_frac"], "seconds": r["seconds"]})
    return pd.DataFrame(rows)


def curves_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """One row per (run, evaluation round): method, seed, round, mean / worst / tail (%)."""
    label = label or method_of
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "round": c["round"],
                          **{m: 100 * c[m] for m in ("mean", "worst", "tail")}}
                         for r in records for c in r["curve"]])


def clients_frame(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """One row per (run, client): accuracy (%) with its width-w slice and with the full global
    model, width, score, training size."""
    label = label or method_of
    return pd.DataFrame([{"method": label(r), "seed": r["seed"], "client": c, "accuracy": 100 * a,
                          "accuracy_full_model": 100 * af, "width": w, "score": s, "n_train": n}
                         for r in records for c, a, af, w, s, n in
                         zip(r["clients"], r["accuracy"], r["accuracy_full_model"], r["widths"],
                             r["scores"], r["sizes"])])


def test_targets(cfg: RunConfig, seeds: Sequence[int]) -> pd.DataFrame:
    """Each client's number of test targets (n_test) per seed's split: the weights of a
    test-token-weighted mean."""
    return pd.DataFrame([{"seed": s, "client": c.name, "n_test": c.n_test}
                         for s in seeds for c in partition(cfg, s).task().clients])


def summaries_from_clients(cdf: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Per run (method, seed): mean / worst / tail of the per-client column ``value`` (%), e.g.
    ``accuracy_full_model`` to summarise the global model's accuracy instead of the slices'."""
    rows = [{"method": m, "seed": s, **{k: 100 * v for k, v in summarize_accuracies(g[value] / 100).items()}}
            for (m, s), g in cdf.groupby(["method", "seed"], sort=False)]
    return pd.DataFrame(rows)


def describe_clients(task: Task) -> pd.DataFrame:
    """Per client: training examples and targets, test targets, distinct training targets, the
    Jaccard overlap of its target set with the union of the other clients' sets, and (text) the
    share of its test targets that are ``<unk>``."""
    sets = [set(np.flatnonzero(c.label_counts)) for c in task.clients]
    rows = []
    for k, c in enumerate(task.clients):
        others = set().union(*(s for j, s in enumerate(sets) if j != k))
        row = {"client": c.name, "train examples": sum(len(x) for x, _ in c.train),
               "train targets": c.n_train, "test targets": c.n_test, "distinct targets": len(sets[k]),
               "overlap with others": len(sets[k] & others) / len(sets[k] | others)}
        if task.ignore_class is not None:
            row["test <unk> rate"] = sum(int((y == task.ignore_class).sum()) for _, y in c.test) / c.n_test
        rows.append(row)
    return pd.DataFrame(rows).set_index("client")


def allocation_table(task: Task, cfgs: dict[str, RunConfig], seed: int) -> pd.DataFrame:
    """Widths each labelled config's plan gives each client, plus each plan's budget use (spend / B
    under that config's own budget: linear for the published rule, FLOPs for ``*_levels``)."""
    plans = {label: plan(cfg, task, seed) for label, cfg in cfgs.items()}
    df = pd.DataFrame({label: p["widths"] for label, p in plans.items()},
                      index=pd.Index([c.name for c in task.clients], name="client"))
    df.insert(0, "n_train", task.sizes)
    df.loc["budget used / B"] = [np.nan, *(p["budget_frac"] for p in plans.values())]
    return df


def scores_frame(cfg: RunConfig, seeds: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """Every client's score under each named score, per seed (the seed's split), plus n_train.
    Uses the same score generator as :func:`plan` (draw 0)."""
    rows = []
    for seed in seeds:
        task = load_task(cfg, seed)
        vals = {n: compute_scores(n, task, cfg, np.random.default_rng([seed, 2, 0])) for n in names}
        rows += [{"seed": seed, "client": c.name, "n_train": c.n_train, **{n: float(v[k]) for n, v in vals.items()}}
                 for k, c in enumerate(task.clients)]
    return pd.DataFrame(rows)


def identical_runs(records: Sequence[dict[str, Any]], label: Callable[[dict], str] | None = None) -> dict[str, str]:
    """Methods whose runs are bit-identical, seed for seed, to an earlier method's (the same final
    parameters in every seed: two settings that give the same allocation, e.g. a smoothing that
    does not change the ranks): duplicate label -> the label it repeats. A family should test one
    of them, and say so."""
    label = label or method_of
    digests: dict[str, dict[int, str]] = {}
    for r in records:
        digests.setdefault(label(r), {})[r["seed"]] = r["params_sha256"]
    out, seen = {}, {}
    for method, by_seed in digests.items():
        key = tuple(sorted(by_seed.items()))
        if key in seen:
            out[method] = seen[key]
        else:
            seen[key] = method
    return out
