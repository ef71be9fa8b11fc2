"""Running the HASA Flower app from Python: Flower's Simulation Engine (Ray) or in this process.

:func:`run` gives the same record as :func:`hasa_core.run`; :func:`cached_run` serves it from the
Flower record cache (``results/flower``).

Imports: flwr (and Ray, when a Ray run starts), :mod:`hasa_core`, :mod:`hasa_records`,
:mod:`hasa_flower.client_app`, :mod:`hasa_flower.dataset`, :mod:`hasa_flower.linkstate`,
:mod:`hasa_flower.server_app`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import hasa_core as H
import hasa_records as records
from hasa_flower.client_app import app as client_app
from hasa_flower.dataset import num_clients
from hasa_flower.linkstate import indexed as indexed_link_state
from hasa_flower.server_app import serve


class LocalGrid(Grid):
    """A Grid that hands each message to the ClientApp of its node in this process and returns the
    replies in a seeded random order (``shuffle``): Flower's message path without Ray. Node k
    has ``partition-id`` k, or the k-th of ``node_configs`` when given."""

    def __init__(self, app: ClientApp, num_nodes: int, shuffle: int | None = None,
                 node_configs: Sequence[dict[str, Any]] | None = None):
        self.app = app
        configs = node_configs or [{"partition-id": k, "num-partitions": num_nodes} for k in range(num_nodes)]
        self.contexts = {k + 1: Context(run_id=0, node_id=k + 1, node_config=dict(configs[k]),
                                        state=RecordDict(), run_config={}) for k in range(num_nodes)}
        self.rng = None if shuffle is None else np.random.default_rng(shuffle)
        self._replies: dict[str, Message] = {}
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = str(uuid.uuid4())
            self._replies[mid] = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = [self._replies.pop(m) for m in list(message_ids) if m in self._replies]
        if self.rng is not None:
            out = [out[i] for i in self.rng.permutation(len(out))]
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class Stopped(RuntimeError):
    """Raised by :class:`StoppableGrid` once its stop event is set: the run was interrupted."""


WINDOW: int | None = None
"""Messages a Ray-backend run keeps in flight at most (:class:`StoppableGrid`); None: every message
of a round at once, as flwr's own grids send them. A window of 64 kept flwr's scan of every message
held per node small; with the indexed link state (:mod:`hasa_flower.linkstate`) a poll
costs the same whatever is held, and in notebook 08's sweep (``results/scale_window.md``, 1,000
clients on 2 shared cores) no window was within run-to-run noise of 16 and 64 in wall time and
used no more CPU."""


POLL = 0.1
"""Seconds a Ray-backend run's server waits between two pulls that brought no reply
(:class:`StoppableGrid`): flwr's own ``InMemoryGrid`` pull interval. Polling every 0.02 s (as before the
index) was within run-to-run noise in wall time and cost more CPU (each pull checks every id still
awaited) in notebook 08's sweep."""


class StoppableGrid(Grid):
    """``inner`` (any Grid), except that every call raises :class:`Stopped` once ``stop`` is set,
    and :meth:`send_and_receive` keeps at most ``window`` messages in flight (None: all at once),
    waiting for replies in a loop that checks ``stop`` every ``poll`` seconds (the loop of flwr's
    own grids, which can only end at their timeout). Replies are the inner grid's, in the order it
    returns them; messages are not touched."""

    def __init__(self, inner: Grid, stop: threading.Event, poll: float = POLL, window: int | None = WINDOW):
        self.inner, self.stop, self.poll, self.window = inner, stop, poll, window
        self.seconds: dict[str, float] = {}  # message type -> seconds spent in send_and_receive

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopped("the run was interrupted")

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check()
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check()
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages`` (at most ``window`` unanswered at a time) and pull their replies until
        every reply came, ``timeout`` seconds passed (None: no limit; the messages not pushed by
        then get no reply) or ``stop`` was set (:class:`Stopped`)."""
        todo, waiting, replies = list(messages)[::-1], set(), []
        kind, t0 = (todo[0].metadata.message_type if todo else ""), time.perf_counter()
        end = None if timeout is None else t0 + timeout
        while todo or waiting:
            room = len(todo) if self.window is None else self.window - len(waiting)
            if todo and room > 0:
                waiting.update(self.push_messages([todo.pop() for _ in range(min(room, len(todo)))]))
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not (todo or waiting) or (end is not None and time.perf_counter() >= end):
                break
            if not got:
                self.stop.wait(self.poll)
        if kind:  # flwr also calls it with no messages (a round without evaluation)
            self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - t0
        return replies


def end_ray_actors() -> int:
    """Kill (no restart) every actor of this process's Ray job that is not dead yet (alive or still
    being created), so that the client tasks in flight fail now instead of running to their end;
    returns how many. Nothing happens when Ray is
    not running here. Reads Ray's actor table (``ray._private.state.actors``: Ray's own debugging
    API, not a stable one; ray is pinned by requirements.lock)."""
    import ray
    if not ray.is_initialized():
        return 0
    from ray._private.state import actors
    from ray._raylet import ActorID
    worker = ray._private.worker.global_worker
    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    live = [a for a, info in actors(job_id=job).items() if info["State"] != "DEAD"]  # being created too
    for actor_id in live:
        worker.core_worker.kill_actor(ActorID.from_hex(actor_id), True)
    return len(live)


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event):
    """While the block runs in the main thread: the first SIGINT (Ctrl-C) only sets ``stop``, so a
    run can wind down in order (the server stops at its next message, the clients' tasks in flight
    finish, Ray shuts down); a second SIGINT acts as SIGINT did before the block (by default:
    ``KeyboardInterrupt`` at once). Outside the main thread, or where SIGINT is ignored, nothing
    changes. The previous handler is restored afterwards."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return

    def handler(signum, frame):
        if not stop.is_set():
            stop.set()
            return
        signal.signal(signal.SIGINT, previous)
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def flwr_log_level(level: int):
    logger = logging.getLogger("flwr")
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def server_identity():
    """What flwr's own runtimes set before a ServerApp runs (messages read their run id from
    it); restored afterwards."""
    from flwr.supercore.task_identity import TaskIdentity
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 0, 0
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def backend_config(num_cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Simulation Engine settings: one CPU per client actor (flwr's default of 2 gives one actor
    on a 2-core machine), no dashboard, Ray's own log lines off."""
    return {"client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}}


def run(cfg: H.RunConfig, seed: int, backend: str = "ray", shuffle: int | None = None,
        backend_cfg: dict[str, Any] | None = None, verbose: bool = False, window: int | None = WINDOW,
        timings: dict[str, float] | None = None, indexed: bool = True, poll: float = POLL) -> dict[str, Any]:
    """One federated run on Flower; returns the same record as :func:`hasa_core.run` (with
    ``provenance.runtime = "flower"``; ``round_seconds`` measured on the server).

    ``backend="ray"``: Flower's Simulation Engine (``flwr.simulation.run_simulation``, one Ray
    actor per CPU); ``backend="local"``: :class:`LocalGrid`, the same messages in this process,
    replies shuffled with seed ``shuffle``. A Ray run keeps at most ``window`` messages in flight
    (:class:`StoppableGrid`; None: every message of a round at once) and pulls replies every ``poll``
    seconds while none came; ``timings``, when given, gets
    the seconds of the Ray run's phases: ``start-up and shut-down`` (outside the ServerApp), and the
    server's ``query``, ``train`` and ``evaluate`` messages (sending, waiting, replies). Its link
    state is :class:`hasa_flower.linkstate.IndexedLinkState` (each node's next message without a scan
    of every message held; the same records), unless ``indexed`` is false or flwr is not the version
    the index was written for (then with a warning).

    Ctrl-C (SIGINT) during a Ray run: the server stops at its next message, the client tasks in
    flight finish, Ray is shut down, and ``KeyboardInterrupt`` is raised (no record; records
    finished before are untouched). A second Ctrl-C interrupts at once, as before.

    Why the deprecated ``run_simulation`` stays (flwr 1.42): its deprecation points to ``flwr
    run``, the only supported entry point, and 1.42 has no supported Python one. ``flwr run`` keeps
    bit-identity (the same ServerApp and ClientApp; checked through it and in deployment mode),
    but it is a CLI that hands the app to a SuperLink, which runs the ServerApp in processes of its
    own (SuperExec, simulation process) and keeps running after the call: nothing comes back to
    the caller but a record file, the run config is a table of scalars instead of a
    :class:`hasa_core.RunConfig`, and Ray's processes are not the caller's descendants, so neither
    :class:`ResourceSampler` nor Ctrl-C reaches them. ``run_simulation`` drives the same Simulation
    Runtime (``vce_api.start_vce``) in this process. The CLI route is ``make flwr-run`` (:func:`flwr_run`)."""
    if backend not in ("ray", "local"):
        raise ValueError(f"unknown backend {backend!r}; valid: 'ray', 'local'")
    k = num_clients(cfg, seed)
    records: list[dict[str, Any]] = []
    with flwr_log_level(logging.INFO if verbose else logging.ERROR):
        if backend == "local":
            with server_identity():
                records.append(serve(LocalGrid(client_app, k, shuffle), cfg, seed, k))
        else:
            # Ray logs a hint about ipywidgets at INFO when it is imported inside a notebook kernel
            logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
            from flwr.simulation import run_simulation
            app, stop, spent = ServerApp(), threading.Event(), {}

            @app.main()
            def _main(grid: Grid, context: Context) -> None:
                t0, timed = time.perf_counter(), StoppableGrid(grid, stop, poll=poll, window=window)
                try:
                    records.append(serve(timed, cfg, seed, k))
                    spent.update(server=time.perf_counter() - t0, **timed.seconds)
                except Stopped:
                    # Ctrl-C: end the clients' tasks in flight now (their errors unlogged), and return
                    # rather than raise, so that flwr gets the server's context at once and shuts Ray down
                    logging.getLogger("flwr").setLevel(logging.CRITICAL)
                    end_ray_actors()

            t0 = time.perf_counter()
            with indexed_link_state(indexed), warnings.catch_warnings(), stop_on_interrupt(stop):
                warnings.simplefilter("ignore")  # run_simulation is deprecated: why it stays, see run()
                run_simulation(server_app=app, client_app=client_app, num_supernodes=k,
                               backend_config=backend_cfg or backend_config(), verbose_logging=verbose)
            if timings is not None and spent:
                timings.update({"start-up and shut-down": time.perf_counter() - t0 - spent.pop("server"),
                                **{str(kind): sec for kind, sec in spent.items()}})
            if stop.is_set():
                raise KeyboardInterrupt("the Flower run was interrupted; Ray has been shut down")
    if not records:
        raise RuntimeError("the Flower simulation ended without a record; rerun with verbose=True to see its log")
    return records[0]


def cached_run(cfg: H.RunConfig, seed: int, results_dir: Path | None = None, **kwargs) -> dict[str, Any]:
    """:func:`run` through the record cache of ``results_dir`` (default ``results/flower``): the
    Flower records sit beside, never mixed with, the in-process ones: only a record whose
    ``provenance.runtime`` is ``flower`` is served from it."""
    results_dir = results_dir or records.DEFAULT_RESULTS_DIR / "flower"
    return records.cached_run(cfg, seed, results_dir, runner=functools.partial(run, **kwargs), runtime="flower")
