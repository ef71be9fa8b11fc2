"""How fast the HASA artifact is: the only module that measures time and samples processes.

Three measurements, each with the load average beside it (the reference machine is a shared
2-core one):

* **throughput** (:func:`bench`): steady-state training rounds of a benchmark against this
  process's own single-thread fp32 matmul rate (:func:`matmul_gflops`);
* **engines** (:func:`compare_engines`): one federation in-process and on Flower's Simulation
  Engine, each in a fresh process, under a :class:`ResourceSampler` (CPU and memory of every
  process of the run, by role) and :func:`link_state_clock` (flwr's message store); the targets
  and before/after comparisons of notebook 08;
* **requirements** (:func:`requirements`): ``make test`` and a smoke reproduction timed in a clean
  clone, and the disk the environment, the data and the results take (the README's first screen).

Imports: :mod:`hasa_core`, :mod:`hasa_flower`. Command line::

    python -m hasa_bench throughput [--benchmark medium digits] [--out results/bench.csv]
    python -m hasa_bench requirements [--out results/requirements.json]
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import MessageType
from tqdm import tqdm

import hasa_core as H
import hasa_records as records
from hasa_flower.simulation import POLL, WINDOW
from hasa_flower.simulation import run as flower_run

# =============================================================================================
# Throughput: training rounds against matmul
# =============================================================================================

def matmul_gflops(n: int = 512, threads: int = 1, repeat: int = 20, device: str = "cpu") -> float:
    """Measured fp32 matmul throughput (n x n @ n x n), GFLOP/s: on the CPU with ``threads``
    threads, or on a CUDA device (n = 4096 there, to fill it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if device != "cpu":
            n = 4096
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeat):
            a @ b
        _sync(device)
        return 2 * n ** 3 * repeat / (time.perf_counter() - t) / 1e9
    finally:
        torch.set_num_threads(before)


def useful_flops_per_round(task: H.Task, cfg: H.RunConfig, widths: Sequence[float]) -> float:
    """Training FLOPs of one round that the model needs: 3 x forward FLOPs per target (forward +
    backward ~ 3 forward) x targets trained, at each client's width. FjORD counts its largest width."""
    return 3.0 * cfg.local_epochs * sum(c.n_train * task.arch.flops(task.arch.units(w))
                                        for c, w in zip(task.clients, widths))


def bench(cfg: H.RunConfig, seed: int = 0, rounds: int = 11) -> dict[str, Any]:
    """Steady-state training throughput of ``cfg`` (one thread) against this process's own
    1-thread fp32 matmul rate (on CUDA: against the GPU's fp32 matmul rate).

    Times ``rounds`` federated rounds one by one and reports the mean of all but the first (which
    pays one-off costs: allocator warm-up, oneDNN primitive creation), one evaluation, and the
    estimated seconds of a whole ``cfg.rounds``-round run: first + (R - 1) x steady + evaluations."""
    if rounds < 2:
        raise ValueError(f"bench needs at least 2 rounds (the first is not steady state); got {rounds}")
    H.tune_allocator()
    load_before = os.getloadavg()[0]
    with H.single_thread():
        task = H.load_task(cfg, seed)
        widths = H.plan(cfg, task, seed)["widths"]
        params = task.arch.init(task.arch.dims, torch.Generator().manual_seed(seed))
        params = {n: p.to(cfg.device) for n, p in params.items()}
        times = []
        for rnd in tqdm(range(rounds), desc=f"bench {cfg.benchmark}", leave=False):
            t = time.perf_counter()
            params, _ = H.train_rounds(params, task, cfg, widths, [rnd], seed)
            _sync(cfg.device)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        H.evaluate(params, task, widths)
        eval_s = time.perf_counter() - t
    steady = float(np.mean(times[1:]))
    flops = useful_flops_per_round(task, cfg, widths)
    n_evals = len({r for r in range(1, cfg.rounds + 1) if r % cfg.eval_every == 0} | {cfg.rounds})
    matmul = matmul_gflops(threads=1, device=cfg.device)
    return {"benchmark": cfg.benchmark, "policy": cfg.policy, "device": cfg.device,
            "rounds timed": rounds - 1, "first round s": times[0], "steady s/round": steady,
            "eval s": eval_s, "rounds per run": cfg.rounds,
            "s per run": times[0] + (cfg.rounds - 1) * steady + n_evals * eval_s,
            "targets/s": cfg.local_epochs * int(task.sizes.sum()) / steady,
            "useful GFLOP/s": flops / steady / 1e9, "matmul GFLOP/s (1 thread, or the GPU)": matmul,
            "fraction of matmul": flops / steady / 1e9 / matmul,
            "load avg (1 min) before/after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
            "torch": torch.__version__, "cpu": H.cpu_model()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_summary(res: dict[str, Any]) -> str:
    """Two lines that say what :func:`bench` measured."""
    return (f"{res['benchmark']}/{res['policy']} on {res['device']}, {res['rounds timed']} steady rounds, 1 thread: "
            f"{res['steady s/round']:.3f} s/round (first {res['first round s']:.2f} s), "
            f"eval {res['eval s']:.3f} s, ~{res['s per run']:.1f} s per {res['rounds per run']}-round run\n"
            f"  useful compute {res['useful GFLOP/s']:.1f} GFLOP/s = {100 * res['fraction of matmul']:.0f}% "
            f"of this process's matmul ({res['matmul GFLOP/s (1 thread, or the GPU)']:.1f} GFLOP/s); "
            f"{res['targets/s']:,.0f} targets/s; load average {res['load avg (1 min) before/after']}")


def bench_table(benchmarks: Sequence[str] = ("medium", "digits"), policy: str = "hasa", device: str = "cpu",
                rounds: int = 11) -> pd.DataFrame:
    """:func:`bench` for each benchmark, as one table (a column per benchmark)."""
    rows = []
    for name in benchmarks:
        res = bench(H.config("paper", benchmark=name, policy=policy, device=device), rounds=rounds)
        print(bench_summary(res))
        rows.append(res)
    return pd.DataFrame(rows).set_index("benchmark").map(lambda v: f"{v:.3g}" if isinstance(v, float) else v).T


# =============================================================================================
# Both engines at scale: in-process against Flower's Simulation Engine
# =============================================================================================

ROLES = ("driver", "Ray actors", "Ray system")
"""What a process is to :class:`ResourceSampler` (:meth:`ResourceSampler.role`)."""


class ResourceSampler:
    """Samples, in a thread, the memory of this process and all its descendants (Ray's GCS, raylet
    and actors included) and each process's CPU time. Use as a context manager; then:

    * ``peak_rss_mib``: the peak of the resident memory summed over the processes (RSS counts a page
      shared by n processes n times: libraries, the digit pools they map), every ``interval`` s;
    * ``peak_pss_mib``: the peak of the proportional set size summed over them (PSS: a shared page
      counts 1/n in each of the n processes mapping it, so the sum counts it once, as the OS does;
      pages shared with processes outside the run count only in part), every ``pss_interval`` s
      (reading it walks each process's page tables: about 10 ms per large process);
    * ``peak_rss_by_role``, ``peak_pss_by_role``: the peak of each :meth:`role`'s summed memory;
    * ``cpu_seconds``: the CPU time used inside the block, summed over every process seen (a
      process that ended between two samples counts up to its last sample), and ``cpu_by_role``.

    Memory is this process's from before the block included."""

    def __init__(self, interval: float = 0.2, pss_interval: float = 1.0):
        import psutil
        self.interval, self.pss_every, self._me = interval, max(1, round(pss_interval / interval)), psutil.Process()
        self.peak_rss_mib = self.peak_pss_mib = 0.0
        self._cpu, self._stop, self._started, self._samples = {}, None, True, 0
        self._role: dict[int, str] = {}
        self.peak_rss_by_role = dict.fromkeys(ROLES, 0.0)
        self.peak_pss_by_role = dict.fromkeys(ROLES, 0.0)

    def role(self, proc) -> str:
        """``driver`` (this process: the in-process engine, or Flower's server, link state and
        Simulation Engine threads), ``Ray actors`` (processes titled ``ray::``: the ClientApps;
        Ray's two agents, titled ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent``, excepted)
        or ``Ray system`` (GCS, raylet, the agents and Ray's other helpers, workers not yet actors)."""
        if proc.pid == self._me.pid:
            return "driver"
        name = proc.name()
        return "Ray actors" if name.startswith("ray::") and not name.endswith("Agent") else "Ray system"

    def _sample(self, pss: bool) -> None:
        import psutil
        rss, by_role = 0, dict.fromkeys(ROLES, 0)
        pss_sum, pss_by_role = 0, dict.fromkeys(ROLES, 0)
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                if self._role.get(proc.pid, "Ray system") == "Ray system":  # an actor gets its title late
                    self._role[proc.pid] = self.role(proc)
                role = self._role[proc.pid]
                mem = proc.memory_info().rss
                t = proc.cpu_times()
                if pss:
                    share = proc.memory_full_info().pss
                    pss_sum += share
                    pss_by_role[role] += share
                rss += mem
                by_role[role] += mem
                first, _ = self._cpu.get(proc.pid, (t.user + t.system if self._started else 0.0, None))
                self._cpu[proc.pid] = (first, t.user + t.system)
            except psutil.Error:
                continue
        self.peak_rss_mib = max(self.peak_rss_mib, rss / 2 ** 20)
        for role, mem in by_role.items():
            self.peak_rss_by_role[role] = max(self.peak_rss_by_role[role], mem / 2 ** 20)
        if pss:
            self.peak_pss_mib = max(self.peak_pss_mib, pss_sum / 2 ** 20)
            for role, mem in pss_by_role.items():
                self.peak_pss_by_role[role] = max(self.peak_pss_by_role[role], mem / 2 ** 20)

    def __enter__(self) -> "ResourceSampler":
        import threading
        self._stop = threading.Event()
        self._sample(pss=True)  # processes alive now count only the CPU time they use from here on
        self._started = False

        def loop():
            while not self._stop.wait(self.interval):
                self._samples += 1
                self._sample(pss=self._samples % self.pss_every == 0)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(pss=True)

    @property
    def cpu_seconds(self) -> float:
        return float(sum(last - first for first, last in self._cpu.values()))

    @property
    def cpu_by_role(self) -> dict[str, float]:
        out = dict.fromkeys(ROLES, 0.0)
        for pid, (first, last) in self._cpu.items():
            out[self._role[pid]] += last - first
        return out


LINK_STATE_CALLS = {
    "get_message_ins": "the engine's look for each node's next message (every 0.1 s, once per node)",
    "get_message_res": "the server's pull of replies",
    "store_message_ins": "the server's push of messages",
    "store_message_res": "the engine's store of replies",
}
"""The methods of flwr's in-memory link state (the Simulation Engine's message store) that
:func:`link_state_clock` times, and what calls them."""


@contextlib.contextmanager
def link_state_clock():
    """While the block runs, count the calls and seconds of :data:`LINK_STATE_CALLS` in this
    process, in flwr 1.42's ``InMemoryLinkState`` and in the app's indexed one
    (:class:`hasa_flower.linkstate.IndexedLinkState`; the methods are wrapped for the block only, and
    a method that calls its parent's counts once): the part of Flower's cost per message that is
    Flower's link state, not our code. Yields {method: [calls, seconds]}."""
    import threading

    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    try:
        from hasa_flower.linkstate import IndexedLinkState
        classes = (InMemoryLinkState, IndexedLinkState)
    except ImportError:  # a checkout from before the index (results/scale_engines_before.py measures one)
        classes = (InMemoryLinkState,)
    clock = {name: [0, 0.0] for name in LINK_STATE_CALLS}
    inside = threading.local()  # the methods this thread is in: a call from a subclass's method is not counted again
    saved = {(cls, name): cls.__dict__[name] for cls in classes for name in LINK_STATE_CALLS if name in cls.__dict__}

    def timed(name, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if getattr(inside, name, False):
                return method(self, *args, **kwargs)
            setattr(inside, name, True)
            t0 = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:  # each method is called from one thread of the engine: no lost updates
                setattr(inside, name, False)
                clock[name][0] += 1
                clock[name][1] += time.perf_counter() - t0
        return wrapper

    for (cls, name), method in saved.items():
        setattr(cls, name, timed(name, method))
    try:
        yield clock
    finally:
        for (cls, name), method in saved.items():
            setattr(cls, name, method)


def link_state_cycle(num_nodes: int = 1000, held: int = 64, indexed: bool = True,
                     cycles: int = 20) -> dict[str, float]:
    """What one poll of flwr's Simulation Engine costs in its link state, alone (no Ray, no
    server): ``num_nodes`` nodes registered as ``run_simulation`` registers them, ``held`` messages
    sent to distinct nodes and not answered (a window's worth), then ``cycles`` polls of
    ``vce_api.add_messages_to_queue`` (``get_message_ins(node, limit=1)`` for every node; the first
    delivers the messages, the others find them delivered and held). ``indexed``: the app's
    :class:`hasa_flower.linkstate.IndexedLinkState`, else flwr's own. Returns seconds per poll and
    microseconds per call."""
    from flwr.app import Message, RecordDict
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    from hasa_flower.linkstate import indexed as indexed_link_state
    from hasa_flower.simulation import server_identity
    with indexed_link_state(indexed):
        factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
        state = factory.state()
    nodes = list(_register_nodes(num_nodes, factory))
    run = Run.create_empty(1)
    run.primary_task_id, run.federation_id = 1, NOOP_FEDERATION_ID
    from flwr.proto.task_pb2 import Task
    state.run_ids[1], state.task_store[1] = RunRecord(run=run), Task(task_id=1, run_id=1)
    grid = InMemoryGrid(factory)
    grid.set_run(run)
    with server_identity():
        from flwr.supercore.task_identity import TaskIdentity
        TaskIdentity.run_id, TaskIdentity.node_id = 1, 1
        rng = np.random.default_rng(0)
        ids = grid.push_messages([Message(RecordDict(), dst_node_id=nodes[i], message_type="train")
                                  for i in rng.choice(num_nodes, size=held, replace=False)])
    if len(list(ids)) != held:
        raise RuntimeError(f"the link state took {len(list(ids))} of {held} messages")
    t0 = time.perf_counter()
    for _ in range(cycles):
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
    sec = (time.perf_counter() - t0) / cycles
    return {"nodes": num_nodes, "messages held": held, "indexed": indexed, "seconds per poll": sec,
            "microseconds per call": 1e6 * sec / num_nodes}


def _measured_run(engine: str, cfg: H.RunConfig, seed: int, backend_cfg: dict[str, Any] | None,
                  window: int | None, poll: float | None = None
                  ) -> tuple[dict[str, float], dict[str, Any], dict[str, tuple[int, float]]]:
    """One engine's run of ``cfg`` in this process, under a :class:`ResourceSampler` and
    :func:`link_state_clock`: (its row of :func:`compare_engines`' measurements, its record,
    the link state's {method: (calls, seconds)}). ``poll``: the server's (None: :func:`run`'s default)."""
    load0, phases, t0 = os.getloadavg()[0], {}, time.perf_counter()
    polled = {} if poll is None else {"poll": poll}
    with ResourceSampler() as res, link_state_clock() as calls:
        rec = (H.run(cfg, seed) if engine == "in-process" else
               flower_run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=window, timings=phases, **polled))
    wall = time.perf_counter() - t0
    rs = np.asarray(rec["round_seconds"])
    row = {"wall seconds": wall, "seconds per round (median)": float(np.median(rs)),
           "seconds per round (p90)": float(np.quantile(rs, 0.9)),
           "seconds outside training rounds": wall - float(rs.sum()),
           "CPU seconds (all processes)": res.cpu_seconds, "peak RSS MiB (all processes)": res.peak_rss_mib,
           "load average before": load0, "load average after": os.getloadavg()[0],
           **{f"CPU seconds: {role}": sec for role, sec in res.cpu_by_role.items()},
           **{f"peak RSS MiB: {role}": mib for role, mib in res.peak_rss_by_role.items()},
           "wall seconds of the training rounds": float(rs.sum()), "peak PSS MiB (all processes)": res.peak_pss_mib,
           **{f"peak PSS MiB: {role}": mib for role, mib in res.peak_pss_by_role.items()}}
    if engine == "flower":
        row.update({"start-up and shut-down seconds": phases.get("start-up and shut-down"),
                    "statistics query seconds": phases.get(MessageType.QUERY),
                    "evaluation seconds": phases.get(MessageType.EVALUATE)})
    return row, rec, {name: (n, sec) for name, (n, sec) in calls.items()}


def compare_engines(cfg: H.RunConfig, seed: int, backend_cfg: dict[str, Any] | None = None,
                    window: int | None = WINDOW, poll: float = POLL
                    ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], dict[str, Any]]:
    """One run of ``cfg`` in-process (:func:`hasa_core.run`, one process) and one on Flower's
    Simulation Engine (one actor per CPU, ``window`` messages in flight, replies polled every
    ``poll`` s), one after the other, each in a fresh process of its own (so neither run's memory
    counts in the other's peak) under a :class:`ResourceSampler`. Returns (measurements, one row
    per engine; the records by engine; Flower's overhead). Timings depend on the machine and its
    load: the load average before and after each run is a column.

    Measurements: wall seconds in all, of the training rounds (the sum of ``round_seconds``) and
    outside them (start-up, the statistics query and evaluation; for Flower each is a column of
    its own: :func:`run`'s ``timings``), the median and p90 training round, CPU seconds, and the
    peak of RSS and of PSS summed over the run's processes, each also by process
    (:meth:`ResourceSampler.role`).

    Overhead: per participant of a training round, (Flower's median round - the in-process
    median round) / participants; per message, the extra CPU seconds of all processes / the
    messages the server sent (one query per client, one per participant per round, one per client
    per evaluation); the calls and seconds of flwr's link state (:func:`link_state_clock`), per call
    and (``get_message_ins``) per message sent."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    rows, recs = {}, {}
    for engine in ("in-process", "flower"):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as fresh:
            rows[engine], recs[engine], calls = fresh.submit(_measured_run, engine, cfg, seed, backend_cfg,
                                                             window, poll).result()
    df = pd.DataFrame(rows).T
    return df, recs, engine_overhead(df, recs, calls, cfg, seed, window)


def engine_overhead(df: pd.DataFrame, recs: dict[str, dict[str, Any]], calls: dict[str, tuple[int, float]],
                    cfg: H.RunConfig, seed: int, window: int | None) -> dict[str, Any]:
    """:func:`compare_engines`' overhead, from its measurements, records and Flower's link-state clock."""
    k = len(recs["flower"]["clients"])
    per_round = [len(H.participants(cfg, seed, r, k)) for r in range(cfg.rounds)]
    messages = k + sum(per_round) + k * len(H.evaluation_rounds(cfg))
    return {
        "clients": k, "participants per round": float(np.mean(per_round)), "messages": messages,
        "messages in flight (window)": "all" if window is None else window,
        "ms per participant per round": 1000 * (df.loc["flower", "seconds per round (median)"]
                                                 - df.loc["in-process", "seconds per round (median)"])
        / np.mean(per_round),
        "extra CPU ms per message (start-up included)": 1000 * (df.loc["flower", "CPU seconds (all processes)"]
                                      - df.loc["in-process", "CPU seconds (all processes)"]) / messages,
        "identical parameters": recs["flower"]["params_sha256"] == recs["in-process"]["params_sha256"],
        **{f"flwr link state: {name}, seconds": sec for name, (n, sec) in calls.items()},
        **{f"flwr link state: {name}, calls": n for name, (n, sec) in calls.items()},
        **{f"flwr link state: {name}, ms per call": 1000 * sec / max(n, 1) for name, (n, sec) in calls.items()},
        "flwr link state: get_message_ins, ms per message": 1000 * calls["get_message_ins"][1] / messages,
    }


def link_state_before_after(before: pd.Series | None, overhead: dict[str, Any]) -> pd.DataFrame:
    """Flwr's link state in a Flower run, per :data:`LINK_STATE_CALLS` method: calls, seconds and
    milliseconds per call, and for ``get_message_ins`` milliseconds per message the server sent,
    from :func:`compare_engines`' ``overhead`` (after) and, when given, a flower row of
    ``results/scale_engines_before.csv`` (before: its ``flwr link state: <method>, calls`` and
    ``..., seconds`` columns, a run of the same config, so the same messages)."""
    runs = {"after": {m: (overhead[f"flwr link state: {m}, calls"], overhead[f"flwr link state: {m}, seconds"])
                      for m in LINK_STATE_CALLS}}
    if before is not None:
        runs = {"before": {m: (before[f"flwr link state: {m}, calls"], before[f"flwr link state: {m}, seconds"])
                           for m in LINK_STATE_CALLS}, **runs}
    rows = {}
    for m in LINK_STATE_CALLS:
        row = {}
        for when, calls in runs.items():
            n, sec = (float(v) for v in calls[m])
            row.update({f"calls {when}": n, f"seconds {when}": sec, f"ms per call {when}": 1000 * sec / max(n, 1),
                        f"ms per message {when}": 1000 * sec / overhead["messages"]})
        if before is not None:
            row["before / after (seconds)"] = row["seconds before"] / row["seconds after"]
        rows[m] = row
    return pd.DataFrame(rows).T


def overhead_table(overhead: dict[str, Any]) -> pd.DataFrame:
    """:func:`compare_engines`' overhead as a one-column table, numbers rounded (3 significant
    digits), booleans as words."""
    return pd.Series({k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in overhead.items()},
                     name="Flower vs in-process").to_frame()


SCALE_TARGETS = {"seconds per round (median)": 1.5, "wall seconds of the training rounds": 2.0,
                 "peak PSS MiB (all processes)": 2.0}
"""The most Flower may cost against the in-process engine at 1,000 clients (the targets notebook 08
checks), as the ratio Flower / in-process of :func:`compare_engines`' median training round, wall
time of the training rounds (start-up, query and evaluation apart) and peak PSS summed over the
run's processes (the memory the OS charges to the run; RSS summed counts every shared page once per
process)."""

SCALE_ALSO = ("wall seconds", "peak RSS MiB (all processes)")
"""Measurements given beside :data:`SCALE_TARGETS` (their ratio, no target): the total wall time,
start-up included, and RSS summed (the earlier targets, <= 2x each)."""


def scale_targets(measures: pd.DataFrame) -> pd.DataFrame:
    """One row per :data:`SCALE_TARGETS` entry: in-process, Flower, their ratio, the target ratio,
    whether it is met and, if not, by how much Flower is over it (in % of the target)."""
    rows = {}
    for column, target in SCALE_TARGETS.items():
        base, flower = measures.loc["in-process", column], measures.loc["flower", column]
        ratio = flower / base
        rows[column] = {"in-process": base, "flower": flower, "flower / in-process": ratio,
                        "target": target, "met": bool(ratio <= target),
                        "over target %": max(0.0, 100 * (ratio / target - 1))}
    return pd.DataFrame(rows).T


def before_after(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Two :func:`compare_engines` measurements side by side, one row per :data:`SCALE_TARGETS`
    entry and then per :data:`SCALE_ALSO` entry (no target: ``target`` and the verdict empty):
    Flower and in-process before and after, Flower / in-process before and after, the target,
    whether the after-measurement meets it and by how much it is over it."""
    rows = {}
    for column in (*SCALE_TARGETS, *SCALE_ALSO):
        b, a = (m.loc[["in-process", "flower"], column].astype(float) for m in (before, after))
        target = SCALE_TARGETS.get(column, np.nan)
        ratio = a["flower"] / a["in-process"]
        rows[column] = {"in-process before": b["in-process"], "flower before": b["flower"],
                        "in-process after": a["in-process"], "flower after": a["flower"],
                        "ratio before": b["flower"] / b["in-process"], "ratio after": ratio, "target": target,
                        "met after": bool(ratio <= target) if column in SCALE_TARGETS else None,
                        "over target % after": max(0.0, 100 * (ratio / target - 1)) if column in SCALE_TARGETS
                        else np.nan}
    return pd.DataFrame(rows).T


def window_sweep(cfg: H.RunConfig, seed: int, windows: Sequence[int | None], polls: Sequence[float] = (POLL,),
                 backend_cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """One Ray run of ``cfg`` per (window, poll) (messages in flight, None: all of a round at once;
    seconds between the server's pulls while no reply came), one after another, each under a
    :class:`ResourceSampler`: wall seconds, of the training rounds too, peak PSS and CPU seconds of
    all processes, median training round, seconds by phase (:func:`run`'s ``timings``) and the
    load average before each run. Rows are indexed by the window (``all``: None), followed by
    ``/poll`` where the poll is not :data:`hasa_flower.POLL`. Every run must give the same
    parameters (the window and the poll change only the order of delivery); a difference raises
    RuntimeError."""
    rows, digests = [], set()
    for poll in polls:
        for w in windows:
            load0, timings, t0 = os.getloadavg()[0], {}, time.perf_counter()
            with ResourceSampler() as res:
                rec = flower_run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=w, poll=poll,
                                 timings=timings)
            name = "all" if w is None else str(w)
            rows.append({"window": name if poll == POLL else f"{name}/{poll:g}", "poll seconds": poll,
                         "wall seconds": time.perf_counter() - t0, "peak PSS MiB (all processes)": res.peak_pss_mib,
                         "CPU seconds (all processes)": res.cpu_seconds,
                         "wall seconds of the training rounds": float(np.sum(rec["round_seconds"])),
                         "seconds per round (median)": float(np.median(rec["round_seconds"])),
                         **{f"{phase} seconds": sec for phase, sec in timings.items()}, "load average before": load0})
            digests.add(rec["params_sha256"])
    if len(digests) > 1:
        raise RuntimeError(f"the window or the poll changed the parameters: {sorted(digests)}")
    return pd.DataFrame(rows).set_index("window")


# =============================================================================================
# Requirements: what checking and reproducing cost, from a clean clone
# =============================================================================================

def _timed_make(clone: Path, *targets: str) -> float:
    """Minutes that ``make TARGETS`` took in ``clone``, run in a session of its own that is ended
    (by its process group) if this process is interrupted; raises CalledProcessError on failure."""
    import signal
    import subprocess
    t = time.perf_counter()
    proc = subprocess.Popen(["make", *targets], cwd=clone, start_new_session=True)
    try:
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, ["make", *targets])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    return (time.perf_counter() - t) / 60


def _mib(path: Path) -> float:
    """Disk use of a file or folder tree in MiB: the sum of its distinct files' sizes, links to files
    and to folders followed (the data folder holds links to both; ``Path.rglob`` would not enter the
    linked folders) and each file counted once however many paths reach it (a venv's ``lib64`` is a
    link to its ``lib``)."""
    if path.is_file():
        return path.stat().st_size / 2 ** 20
    sizes = {}
    for root, _, files in os.walk(path, followlinks=True):
        for f in files:
            st = (Path(root) / f).stat()
            sizes[st.st_dev, st.st_ino] = st.st_size
    return sum(sizes.values()) / 2 ** 20


def requirements(repo: Path = H.REPO) -> dict[str, Any]:
    """Clone ``repo``'s HEAD into a temporary folder, link this checkout's data files in, build the
    environment (not timed), then time ``make reproduce PROFILE=smoke`` and ``make test``; measure
    the disk the environment, the data and the committed results take; the machine and the load
    average (before and after)."""
    import shutil
    import subprocess
    import tempfile
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hasa-requirements-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
        results_mib = _mib(clone / "results")
        (clone / "data").mkdir(exist_ok=True)
        for rel in H.data_files():
            target = clone / "data" / Path(rel).parts[0]
            if not target.exists():
                target.symlink_to((H.data_dir() / Path(rel).parts[0]).resolve())
        _timed_make(clone, "venv")
        smoke = _timed_make(clone, "reproduce", "PROFILE=smoke")
        shutil.rmtree(clone / "results" / "smoke", ignore_errors=True)
        test = _timed_make(clone, "test")
        disk = {"environment": _mib(clone / ".venv"), "data": _mib(clone / "data"), "results": results_mib}
    return {"make_test_minutes": test, "smoke_minutes": smoke, "disk_mib": disk, "machine": H.cpu_model(),
            "load": " → ".join(", ".join(f"{x:.2f}" for x in la) for la in (load_before, os.getloadavg()))}


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("throughput", help="steady-state training throughput vs matmul throughput")
    b.add_argument("--benchmark", nargs="+", default=["medium", "digits"], choices=sorted(H.BENCHMARKS))
    b.add_argument("--policy", default="hasa", choices=sorted(H.POLICIES))
    b.add_argument("--rounds", type=int, default=11, help="rounds timed; the first is not counted")
    b.add_argument("--device", default="cpu")
    b.add_argument("--out", default="", help="also write the table as CSV here (make bench: results/bench.csv)")
    r = sub.add_parser("requirements", help="time make test and a smoke reproduction in a clean clone; disk use")
    r.add_argument("--out", default="results/requirements.json")
    args = ap.parse_args(argv)
    if args.cmd == "requirements":
        import json
        records.write_text_atomic(Path(args.out), json.dumps(requirements(), indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    table = bench_table(args.benchmark, args.policy, args.device, args.rounds)
    if args.out:
        records.write_text_atomic(Path(args.out), table.to_csv())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    _main()
