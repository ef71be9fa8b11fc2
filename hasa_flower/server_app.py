"""The HASA ServerApp: query the nodes' statistics, plan the widths, run the strategy, make the record.

``serve`` is the whole run on the server side (any Grid: Flower's, or the in-process
:class:`hasa_flower.simulation.LocalGrid`); Flower loads ``app`` for ``flwr run``.

Imports: flwr, :mod:`hasa_core`, :mod:`hasa_records` (the record of a ``flwr run``),
:mod:`hasa_flower.wire`, :mod:`hasa_flower.strategy`, :mod:`hasa_flower.linkstate`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

import hasa_core as H
import hasa_records as records
from hasa_flower.linkstate import index_state
from hasa_flower.strategy import HasaStrategy
from hasa_flower.wire import config_record, from_record, partition_id, to_record


def wait_for_nodes(grid: Grid, n: int, timeout: float = 300.0) -> list[int]:
    """Node ids once at least ``n`` nodes have registered (the ServerApp may start before them)."""
    end = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < n:
        if time.monotonic() > end:
            raise TimeoutError(f"only {len(nodes)} of {n} nodes registered within {timeout:.0f} s")
        time.sleep(0.5)
    return nodes


def query_statistics(grid: Grid, cfg: H.RunConfig, seed: int, num_clients: int,
                     timeout: float = 3600) -> tuple[list[int], H.Statistics]:
    """Ask every node for its partition-id and one-time upload. Returns node id per partition and
    the :class:`hasa_core.Statistics` the allocation works from."""
    nodes = wait_for_nodes(grid, num_clients)
    msgs = [Message(content=RecordDict({"config": config_record(cfg, seed)}), message_type=MessageType.QUERY,
                    dst_node_id=n) for n in nodes]
    by_k: dict[int, tuple[int, H.ClientStatistics, tuple[int, ...]]] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        k, info = partition_id(reply), reply.content["reply"]
        counts = reply.content["counts"]
        by_k[k] = (reply.metadata.src_node_id,
                   H.ClientStatistics(str(info["name"]), int(info["n-train"]), counts["label_counts"].numpy(),
                                      counts["feature_counts"].numpy()), tuple(int(i) for i in info["special"]))
    if sorted(by_k) != list(range(num_clients)):
        raise RuntimeError(f"expected partitions 0..{num_clients - 1}, got {sorted(by_k)}")
    stats = [by_k[k][1] for k in range(num_clients)]
    arch = H.build_arch(cfg, len(stats[0].label_counts))
    return [by_k[k][0] for k in range(num_clients)], H.Statistics(tuple(stats), arch, by_k[0][2])


def serve(grid: Grid, cfg: H.RunConfig, seed: int, num_clients: int, timeout: float = 3600) -> dict[str, Any]:
    """The whole run on the server side; returns the record (:func:`hasa_core.make_record`)."""
    t0 = time.perf_counter()
    nodes, stats = query_statistics(grid, cfg, seed, num_clients, timeout)
    p = H.plan(cfg, stats, seed)
    arch = stats.arch
    init = arch.init(arch.dims, torch.Generator().manual_seed(seed))
    held = [H.held_rows(c, arch) for c in stats.clients] if cfg.row_masking else None  # from the uploaded counts
    strategy = HasaStrategy(cfg, seed, arch, p["widths"], nodes, held)
    result = strategy.start(grid, to_record(init), num_rounds=cfg.rounds, timeout=timeout)
    params = from_record(result.arrays)
    return H.make_record(cfg, seed, [c.name for c in stats.clients], stats.sizes, p, params, strategy.curve,
                         strategy.accuracy_full_model, time.perf_counter() - t0, strategy.round_seconds,
                         engine="flower")


def _integer(rc: dict[str, Any], key: str, default: int | None = None, low: int = 0) -> int:
    """``rc[key]`` (``default`` when absent) as given: an integer >= ``low``, else ValueError. A
    float (even 1.0: ``seed=1.5`` would silently be seed 1), a bool or a string is refused."""
    if key not in rc and default is None:
        raise ValueError(f"the run config lacks {key} (an integer >= {low})")
    value = rc.pop(key, default)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"run config: {key} must be an integer >= {low}; got {value!r}")
    return value


def run_config_to_cfg(run_config: dict[str, Any]) -> tuple[H.RunConfig, int, int, str]:
    """``flwr run``: [tool.flwr.app.config] -> (RunConfig, seed, number of clients, results dir).
    Keys: profile, benchmark, seed, num-clients, results-dir, and RunConfig fields with '-' for
    '_' (e.g. ``participation``, ``policy``); ``rounds`` or ``eval-every`` = 0 keep the profile's.
    ``seed`` (>= 0) and ``num-clients`` (>= 1) must be integers, as must every integer field of
    RunConfig (which checks its own fields): a non-integer is refused with a ValueError, never
    rounded."""
    rc = dict(run_config)
    profile, benchmark = str(rc.pop("profile", "smoke")), str(rc.pop("benchmark", "medium"))
    seed, num_clients = _integer(rc, "seed", 0), _integer(rc, "num-clients", low=1)
    results = str(rc.pop("results-dir", ""))
    overrides = {k.replace("-", "_"): v for k, v in rc.items()  # 0 (the integer): the profile's value
                 if not (k in ("rounds", "eval-every") and type(v) is int and v == 0)}
    return H.config(profile, benchmark, **overrides), seed, num_clients, results


app = ServerApp()


@app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run .``: runs the configured federation and caches its record under
    ``results-dir`` (default: results/flower) like :func:`hasa_core.cached_run`. In a simulation
    (flwr's own in-memory link state) the link state is indexed first (:func:`index_state`)."""
    cfg, seed, k, results = run_config_to_cfg(context.run_config)
    if index_state(getattr(grid, "state", None)):  # a simulation's link state, made before this app ran
        print("the simulation's link state is indexed (hasa_flower.linkstate)")
    rec = serve(grid, cfg, seed, k)
    out = records.record_path(cfg, seed, Path(results) if results else Path.cwd() / "results" / "flower")
    records.write_json_atomic(out, records.sealed(rec))
    print(f"record written to {out}: mean {100 * rec['mean']:.2f} %, worst {100 * rec['worst']:.2f} %")
