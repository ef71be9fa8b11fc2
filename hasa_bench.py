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

    python -m hasa_bench throughput [--benchmark medium digits] [--out results/bench.md]
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
from hasa_flower.simulation import WINDOW
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
    """Samples, every ``interval`` seconds in a thread, the resident memory summed over this process
    and all its descendants (Ray's GCS, raylet and actors included) and each process's CPU time.
    Use as a context manager; then ``peak_rss_mib`` (this process's memory from before included)
    and ``cpu_seconds``: the CPU time used inside the block, summed over every process seen (a
    process that ended between two samples counts up to its last sample); ``cpu_by_role``: the
    same CPU time by :meth:`role` of the process; ``peak_rss_by_role``: the peak of each role's
    summed resident memory."""

    def __init__(self, interval: float = 0.2):
        import psutil
        self.interval, self._me = interval, psutil.Process()
        self.peak_rss_mib, self._cpu, self._stop, self._started = 0.0, {}, None, True
        self._role: dict[int, str] = {}
        self.peak_rss_by_role = dict.fromkeys(ROLES, 0.0)

    def role(self, proc) -> str:
        """``driver`` (this process: the in-process engine, or Flower's server, link state and
        Simulation Engine threads), ``Ray actors`` (processes titled ``ray::``: the ClientApps)
        or ``Ray system`` (GCS, raylet and Ray's other helpers)."""
        if proc.pid == self._me.pid:
            return "driver"
        return "Ray actors" if proc.name().startswith("ray::") else "Ray system"

    def _sample(self) -> None:
        import psutil
        rss, by_role = 0, dict.fromkeys(self.peak_rss_by_role, 0)
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                if self._role.get(proc.pid, "Ray system") == "Ray system":  # an actor gets its title late
                    self._role[proc.pid] = self.role(proc)
                mem = proc.memory_info().rss
                rss += mem
                by_role[self._role[proc.pid]] += mem
                t = proc.cpu_times()
                first, _ = self._cpu.get(proc.pid, (t.user + t.system if self._started else 0.0, None))
                self._cpu[proc.pid] = (first, t.user + t.system)
            except psutil.Error:
                continue
        self.peak_rss_mib = max(self.peak_rss_mib, rss / 2 ** 20)
        for role, mem in by_role.items():
            self.peak_rss_by_role[role] = max(self.peak_rss_by_role[role], mem / 2 ** 20)

    def __enter__(self) -> "ResourceSampler":
        import threading
        self._stop = threading.Event()
        self._sample()  # processes alive now count only the CPU time they use from here on
        self._started = False

        def loop():
            while not self._stop.wait(self.interval):
                self._sample()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

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
    process (flwr 1.42's ``InMemoryLinkState``; the methods are wrapped for the block only): the
    part of Flower's cost per message that is Flower's code, not ours. Yields {method: [calls,
    seconds]}."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    clock = {name: [0, 0.0] for name in LINK_STATE_CALLS}
    saved = {name: getattr(InMemoryLinkState, name) for name in LINK_STATE_CALLS}

    def timed(name, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:  # each method is called from one thread of the engine: no lost updates
                clock[name][0] += 1
                clock[name][1] += time.perf_counter() - t0
        return wrapper

    for name, method in saved.items():
        setattr(InMemoryLinkState, name, timed(name, method))
    try:
        yield clock
    finally:
        for name, method in saved.items():
            setattr(InMemoryLinkState, name, method)


def _measured_run(engine: str, cfg: H.RunConfig, seed: int, backend_cfg: dict[str, Any] | None,
                  window: int | None) -> tuple[dict[str, float], dict[str, Any], dict[str, tuple[int, float]]]:
    """One engine's run of ``cfg`` in this process, under a :class:`ResourceSampler` and
    :func:`link_state_clock`: (its row of :func:`compare_engines`' measurements, its record,
    the link state's {method: (calls, seconds)})."""
    load0, phases, t0 = os.getloadavg()[0], {}, time.perf_counter()
    with ResourceSampler() as res, link_state_clock() as calls:
        rec = (H.run(cfg, seed) if engine == "in-process" else
               flower_run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=window, timings=phases))
    wall = time.perf_counter() - t0
    rs = np.asarray(rec["round_seconds"])
    row = {"wall seconds": wall, "seconds per round (median)": float(np.median(rs)),
           "seconds per round (p90)": float(np.quantile(rs, 0.9)),
           "seconds outside training rounds": wall - float(rs.sum()),
           "CPU seconds (all processes)": res.cpu_seconds, "peak RSS MiB (all processes)": res.peak_rss_mib,
           "load average before": load0, "load average after": os.getloadavg()[0],
           **{f"CPU seconds: {role}": sec for role, sec in res.cpu_by_role.items()},
           **{f"peak RSS MiB: {role}": mib for role, mib in res.peak_rss_by_role.items()}}
    if engine == "flower":
        row.update({"start-up and shut-down seconds": phases.get("start-up and shut-down"),
                    "statistics query seconds": phases.get(MessageType.QUERY),
                    "evaluation seconds": phases.get(MessageType.EVALUATE)})
    return row, rec, {name: (n, sec) for name, (n, sec) in calls.items()}


def compare_engines(cfg: H.RunConfig, seed: int, backend_cfg: dict[str, Any] | None = None,
                    window: int | None = WINDOW) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], dict[str, Any]]:
    """One run of ``cfg`` in-process (:func:`hasa_core.run`, one process) and one on Flower's
    Simulation Engine (one actor per CPU, ``window`` messages in flight), one after the other, each
    in a fresh process of its own (so neither run's memory counts in the other's peak) under a
    :class:`ResourceSampler`. Returns (measurements, one row per engine; the records by engine;
    Flower's overhead). Timings depend on the machine and its load: the load average before and
    after each run is a column.

    Overhead: per participant of a training round, (Flower's median round - the in-process
    median round) / participants; per message, the extra CPU seconds of all processes / the
    messages the server sent (one query per client, one per participant per round, one per client
    per evaluation). Where the time goes: the Flower run's phases (:func:`run`'s ``timings``) and
    each run's CPU seconds and peak memory by process (:meth:`ResourceSampler.role`) are columns
    of the measurements; the calls and seconds of flwr's link state (:func:`link_state_clock`) are
    in the overhead."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    rows, recs = {}, {}
    for engine in ("in-process", "flower"):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as fresh:
            rows[engine], recs[engine], calls = fresh.submit(_measured_run, engine, cfg, seed, backend_cfg,
                                                             window).result()
    df = pd.DataFrame(rows).T
    k = len(recs["flower"]["clients"])
    per_round = [len(H.participants(cfg, seed, r, k)) for r in range(cfg.rounds)]
    messages = k + sum(per_round) + k * len(H.evaluation_rounds(cfg))
    overhead = {
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
    }
    return df, recs, overhead


def overhead_table(overhead: dict[str, Any]) -> pd.DataFrame:
    """:func:`compare_engines`' overhead as a one-column table, numbers rounded, booleans as words."""
    return pd.Series({k: f"{v:.1f}" if isinstance(v, float) else str(v) for k, v in overhead.items()},
                     name="Flower vs in-process").to_frame()


SCALE_TARGETS = {"seconds per round (median)": 1.5, "wall seconds": 2.0, "peak RSS MiB (all processes)": 2.0}
"""The most Flower may cost against the in-process engine at 1,000 clients (the targets notebook 08
checks), as the ratio Flower / in-process of :func:`compare_engines`' training rounds, wall time and peak memory."""


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
    """:func:`scale_targets` of two :func:`compare_engines` measurements side by side: per target,
    Flower and in-process before and after, Flower / in-process before and after, the target,
    whether the after-measurement meets it and by how much it is over it."""
    b, a = scale_targets(before), scale_targets(after)
    return pd.DataFrame({"in-process before": b["in-process"], "flower before": b["flower"],
                         "in-process after": a["in-process"], "flower after": a["flower"],
                         "ratio before": b["flower / in-process"], "ratio after": a["flower / in-process"],
                         "target": a["target"], "met after": a["met"], "over target % after": a["over target %"]})


def window_sweep(cfg: H.RunConfig, seed: int, windows: Sequence[int | None],
                 backend_cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """One Ray run of ``cfg`` per window (messages in flight; None: all of a round at once), one
    after another: wall seconds, median training round, seconds by phase (:func:`run`'s
    ``timings``) and the load average before each run. Every run must give the same parameters
    (the window changes only the order of delivery); a difference raises RuntimeError."""
    rows, digests = [], set()
    for w in windows:
        load0, timings, t0 = os.getloadavg()[0], {}, time.perf_counter()
        rec = flower_run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=w, timings=timings)
        rows.append({"window": "all" if w is None else str(w), "wall seconds": time.perf_counter() - t0,
                     "seconds per round (median)": float(np.median(rec["round_seconds"])),
                     **{f"{phase} seconds": sec for phase, sec in timings.items()}, "load average before": load0})
        digests.add(rec["params_sha256"])
    if len(digests) > 1:
        raise RuntimeError(f"the window changed the parameters: {sorted(digests)}")
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
    """Disk use of a file or folder tree in MiB, links followed (the data folder holds links)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2 ** 20


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
    b.add_argument("--out", default="", help="also write the table as Markdown here (make bench: results/bench.md)")
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
        records.write_text_atomic(Path(args.out), table.to_markdown(floatfmt=".3g") + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    _main()
