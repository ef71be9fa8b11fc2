"""HASA on Flower's Message API (flwr 1.42.0, pinned): a ``Strategy``, a ``ClientApp`` and a ``ServerApp``.

Every number comes from :mod:`hasa_core`; this module only moves tensors and statistics between
a server and its clients. A run here gives the same record as :func:`hasa_core.run` (same
widths, same accuracies, bit-identical parameters), because

* each client's randomness is its own, derived from (seed, round, client)
  (:func:`hasa_core.client_generators`), so it does not matter where or in which order clients train;
* clients train with one intra-op thread (:func:`hasa_core.train_subnet`);
* the server aggregates with :func:`hasa_core.aggregate`, whose float64 accumulator makes the
  result independent of the order of the replies (Flower's own ``aggregate_arrayrecords`` sums in
  float32, and its result depends on the order).

The protocol of one run:

1. **query**: every node replies with its ``partition-id`` (a ServerApp never sees node configs),
   its n_k and its two histograms (:class:`hasa_core.ClientStatistics`: a privacy cost, see the
   README). The server computes the scores and widths from these alone (:func:`hasa_core.plan`
   on :class:`hasa_core.Statistics`); the score ``loss`` needs the data and is refused.
2. **train**, each round: the round's :func:`hasa_core.participants` each get their subnet (the
   server extracts it; the client never sees the rest of the model) and the round number; they
   reply with the trained subnet and n_k.
3. **evaluate**, at :func:`hasa_core.evaluation_rounds`: every client gets the static slice of
   the global model at its width and replies with its test accuracy; after the last round it gets
   the whole model and also replies with the full model's accuracy.

Three ways to run it: :func:`run` (Python, notebooks; ``backend="ray"`` is Flower's Simulation
Engine, ``backend="local"`` delivers the same messages in this process, no Ray), and
``flwr run .`` (the ``[tool.flwr.app]`` section of pyproject.toml), best through ``make flwr-run``
(:func:`flwr_run`: its own SuperLink, ended afterwards, and an exit code that says whether the
run failed; see the README).

Where a node's data come from: in a simulation every node draws the benchmark's partition from the
data set (who holds which examples: :func:`hasa_core.partition`) and builds only the clients it
serves, the first time it serves each, keeping them. A deployed SuperNode started with
``--node-config "vocab-file=... partition-file=..."`` builds its client from those two files alone
(:func:`hasa_core.node_task`; it never opens the data set), which ``python -m hasa_flower
node-files --out DIR --run-config "..."`` writes for the run (:func:`write_node_files`); files
written for another seed, data config or data set fail the node with one message.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before flwr is imported: no telemetry
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning of Ray

import numpy as np
import pandas as pd
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

import hasa_core as H

# =============================================================================================
# Wire format
# =============================================================================================

def to_record(params: dict[str, torch.Tensor]) -> ArrayRecord:
    """Tensors -> ArrayRecord (exact: float32 bytes are copied, not converted)."""
    return ArrayRecord.from_torch_state_dict({n: t.contiguous() for n, t in params.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> tensors, copied: Flower's arrays are read-only views of the message bytes."""
    return {n: t.clone() for n, t in record.to_torch_state_dict().items()}


@functools.lru_cache(maxsize=8)
def _config_json(cfg: H.RunConfig) -> str:
    return json.dumps(cfg.as_dict())


@functools.lru_cache(maxsize=8)
def _config_of(text: str) -> H.RunConfig:
    return H.RunConfig.from_dict(json.loads(text))


def config_record(cfg: H.RunConfig, seed: int, **items: Any) -> ConfigRecord:
    """The run's identity travels with every message, so a client needs no run_config (its JSON
    is made once per config, not once per message)."""
    return ConfigRecord({"hasa-config": _config_json(cfg), "seed": seed, **items})


def read_config(record: ConfigRecord) -> tuple[H.RunConfig, int]:
    """(config, seed) of a message; the config is parsed and validated once per process and config."""
    return _config_of(str(record["hasa-config"])), int(record["seed"])


def _int_array(x: np.ndarray) -> Array:
    return Array.from_numpy_ndarray(np.ascontiguousarray(x, dtype=np.int64))


def _partition_id(reply: Message) -> int:
    if reply.has_error():
        raise RuntimeError(f"node {reply.metadata.src_node_id} failed: {reply.error.reason}")
    return int(reply.content["reply"]["partition-id"])


# =============================================================================================
# ClientApp
# =============================================================================================

client_app = ClientApp()


@functools.lru_cache(maxsize=2)
def _partition(cfg: H.RunConfig, seed: int) -> tuple[H.Partition, dict[int, H.Task]]:
    """The benchmark's partition (:func:`hasa_core.partition`: who holds which examples, no
    tensors), drawn once per process and (config, seed), and the clients built from it so far."""
    return H.partition(cfg, seed), {}


def _client_task(cfg: H.RunConfig, seed: int, k: int) -> H.Task:
    """The one-client :class:`hasa_core.Task` of partition k, as a simulated node holds it: built
    the first time this process serves client k, then kept (a Ray actor serving many clients
    builds only those it serves; tensor for tensor client k of :func:`hasa_core.load_task`)."""
    part, built = _partition(cfg, seed)
    if not 0 <= k < len(part):
        raise ValueError(f"partition-id {k} is outside the {len(part)} clients of this benchmark")
    if k not in built:
        built[k] = H.on_device(part.task([k]), cfg.device)
    return built[k]


@functools.lru_cache(maxsize=2)
def _node_task(cfg: H.RunConfig, seed: int, vocab_file: str, partition_file: str) -> tuple[int, H.Task]:
    """A deployed node's partition id and one-client task, from its node files only
    (:func:`hasa_core.node_task`): read once per process and (config, seed)."""
    return H.node_task(cfg, seed, Path(vocab_file), Path(partition_file))


NODE_FILES = ("vocab-file", "partition-file")
"""Node-config keys of a deployed node's files (``python -m hasa_flower node-files`` writes them);
a node without them has ``partition-id`` and builds its client from the data set (simulation)."""


def _my_client(msg: Message, context: Context) -> tuple[H.RunConfig, int, H.Task, int, H.Client]:
    """(config, seed, task, partition id k, client k) of the node that got ``msg``: from its node
    files when its node config names them, else client k of the benchmark's partition."""
    cfg, seed = read_config(msg.content["config"])
    node = context.node_config
    given = [key for key in NODE_FILES if key in node]
    if given:
        if given != list(NODE_FILES):
            raise ValueError(f"a node built from its files needs {' and '.join(NODE_FILES)} in its node "
                             f"config; it has only {given[0]}")
        k, task = _node_task(cfg, seed, *(str(node[key]) for key in NODE_FILES))
        if "partition-id" in node and int(node["partition-id"]) != k:
            raise ValueError(f"the node config says partition-id {node['partition-id']}, its partition file {k}")
        return cfg, seed, task, k, task.clients[0]
    k = int(node["partition-id"])
    task = _client_task(cfg, seed, k)
    return cfg, seed, task, k, task.clients[0]


def _reply(msg: Message, k: int, arrays: dict[str, ArrayRecord] | None = None, **metrics: float) -> Message:
    content = RecordDict({"reply": ConfigRecord({"partition-id": k}), **(arrays or {})})
    if metrics:
        content["metrics"] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Reply with this client's one-time upload: n_k and its two histograms."""
    cfg, seed, task, k, c = _my_client(msg, context)
    reply = _reply(msg, k, {"counts": ArrayRecord({"label_counts": _int_array(c.label_counts),
                                                   "feature_counts": _int_array(c.feature_counts)})})
    reply.content["reply"]["name"] = c.name
    reply.content["reply"]["n-train"] = c.n_train
    reply.content["reply"]["special"] = list(task.special)
    return reply


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """Train the received subnet (:func:`hasa_core.train_subnet`) and send it back with n_k."""
    cfg, seed, task, k, client = _my_client(msg, context)
    conf = msg.content["config"]
    if int(conf["partition-id"]) != k:
        raise ValueError(f"a message for partition {conf['partition-id']} reached partition {k}")
    local = H.train_subnet(from_record(msg.content["subnet"]), task.arch, client, cfg,
                           float(conf["width"]), int(conf["round"]), k, seed)
    return _reply(msg, k, {"subnet": to_record(local)}, **{"num-examples": float(client.n_train)})


@client_app.evaluate()
def client_evaluate(msg: Message, context: Context) -> Message:
    """Test accuracy of the global model's static slice at each requested width (or of the
    slice it was sent, when the message says ``sliced``)."""
    cfg, seed, task, k, client = _my_client(msg, context)
    params, conf = from_record(msg.content["model"]), msg.content["config"]
    if conf.get("sliced", False):  # already the width-w_k slice: score it as it is
        acc = [H.accuracy(params, task.arch, client.test, task.ignore_class)]
    else:
        acc = [H.client_accuracy(params, task.arch, client, float(w), task.ignore_class) for w in conf["widths"]]
    return _reply(msg, k, **{f"accuracy-{i}": a for i, a in enumerate(acc)})


# =============================================================================================
# Strategy
# =============================================================================================

class HasaStrategy(Strategy):
    """Width-sliced FedAvg with fixed per-client widths (HASA or any baseline of ``cfg.policy``).

    ``nodes[k]`` is the node id of partition k. Collects the learning curve (per-client accuracies
    at :func:`hasa_core.evaluation_rounds`) and, after the last round, the full model's accuracies."""

    def __init__(self, cfg: H.RunConfig, seed: int, arch: H.Architecture, widths: Sequence[float],
                 nodes: Sequence[int], held: Sequence[dict[str, torch.Tensor]] | None = None):
        self.cfg, self.seed, self.arch, self.held = cfg, seed, arch, held
        self.widths, self.nodes = [float(w) for w in widths], list(nodes)
        self.at = H.evaluation_rounds(cfg)
        self.curve: list[dict[str, Any]] = []
        self.accuracy_full_model: list[float] = []
        self._sent: dict[str, torch.Tensor] = {}     # the global parameters of this round
        self._indices: dict[int, H.Indices] = {}     # partition -> the units it was sent
        self.round_seconds: list[float] = []  # per round: configure, clients' training, aggregation

    def summary(self) -> None:
        pass

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        rnd, params = server_round - 1, from_record(arrays)
        self._sent, self._indices = params, {}
        self._t0 = time.perf_counter()
        messages = []
        for k in H.participants(self.cfg, self.seed, rnd, len(self.nodes)):
            w = self.widths[k]
            self._indices[int(k)] = idx = H.subnet_indices(self.arch, self.cfg, w, rnd, int(k), self.seed)
            content = RecordDict({"subnet": to_record(H.extract(params, self.arch, idx)),
                                  "config": config_record(self.cfg, self.seed, round=rnd, width=w,
                                                          **{"partition-id": int(k)})})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.nodes[k]))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates, expected, order = [], set(self._indices), []
        for reply in replies:
            k = _partition_id(reply)
            expected.discard(k)
            order.append(k)
            updates.append((from_record(reply.content["subnet"]), self._indices[k],
                            float(reply.content["metrics"]["num-examples"])))
        if expected:
            raise RuntimeError(f"round {server_round}: no reply from partitions {sorted(expected)}")
        held = [self.held[k] for k in order] if self.held else None
        new = H.aggregate(self._sent, self.arch, updates, self.cfg.aggregation, self.cfg.weighting, held)
        self.round_seconds.append(time.perf_counter() - self._t0)
        return to_record(new), MetricRecord({"clients": len(updates)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if server_round not in self.at:
            return []
        if server_round == self.cfg.rounds:  # the whole model: accuracy at w_k and at full width
            def whole(w: float) -> RecordDict:
                return RecordDict({"model": arrays, "config": config_record(self.cfg, self.seed, widths=[w, 1.0])})
            return [Message(content=whole(w), message_type=MessageType.EVALUATE, dst_node_id=node)
                    for node, w in zip(self.nodes, self.widths)]
        params, messages, slices = from_record(arrays), [], {}
        for node, w in zip(self.nodes, self.widths):  # only the static width-w_k slice the client is scored with
            units = tuple(sorted(self.arch.units(w).items()))
            if units not in slices:  # clients with the same unit counts get the same slice: made once
                idx = H.client_indices("static", self.arch, w, 0, None)
                slices[units] = to_record(H.extract(params, self.arch, idx))
            messages.append(Message(content=RecordDict({"model": slices[units], "config": config_record(
                self.cfg, self.seed, widths=[w], sliced=True)}), message_type=MessageType.EVALUATE, dst_node_id=node))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if server_round not in self.at:
            return None
        acc = [np.nan] * len(self.nodes)
        full = [np.nan] * len(self.nodes)
        for reply in replies:
            k = _partition_id(reply)
            acc[k] = float(reply.content["metrics"]["accuracy-0"])
            if server_round == self.cfg.rounds:
                full[k] = float(reply.content["metrics"]["accuracy-1"])
        missing = [k for k, a in enumerate(acc) if np.isnan(a)]
        if missing:
            raise RuntimeError(f"round {server_round}: no evaluation from partitions {missing}")
        summary = H.summarize_accuracies(acc)
        self.curve.append({"round": server_round, "accuracy": acc, **summary})
        if server_round == self.cfg.rounds:
            self.accuracy_full_model = full
        return MetricRecord(summary)


# =============================================================================================
# ServerApp
# =============================================================================================

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
        k, info = _partition_id(reply), reply.content["reply"]
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


def _run_config_to_cfg(run_config: dict[str, Any]) -> tuple[H.RunConfig, int, int, str]:
    """``flwr run``: [tool.flwr.app.config] -> (RunConfig, seed, number of clients, results dir).
    Keys: profile, benchmark, seed, num-clients, results-dir, and RunConfig fields with '-' for
    '_' (e.g. ``participation``, ``policy``); ``rounds`` or ``eval-every`` = 0 keep the profile's."""
    rc = dict(run_config)
    profile, benchmark = str(rc.pop("profile", "smoke")), str(rc.pop("benchmark", "medium"))
    seed, num_clients = int(rc.pop("seed", 0)), int(rc.pop("num-clients"))
    results = str(rc.pop("results-dir", ""))
    overrides = {k.replace("-", "_"): v for k, v in rc.items()
                 if not (k in ("rounds", "eval-every") and v == 0)}  # 0: the profile's value
    return H.config(profile, benchmark, **overrides), seed, num_clients, results


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run .``: runs the configured federation and caches its record under
    ``results-dir`` (default: results/flower) like :func:`hasa_core.cached_run`."""
    cfg, seed, k, results = _run_config_to_cfg(context.run_config)
    rec = serve(grid, cfg, seed, k)
    out = H.record_path(cfg, seed, Path(results) if results else Path.cwd() / "results" / "flower")
    H.write_json_atomic(out, H.sealed(rec))
    print(f"record written to {out}: mean {100 * rec['mean']:.2f} %, worst {100 * rec['worst']:.2f} %")


# =============================================================================================
# Running from Python
# =============================================================================================

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


WINDOW = 64
"""Messages a Ray-backend run keeps in flight at most (:class:`StoppableGrid`). Set before notebook
08's sweep (``results/scale_window.md``: one 1,000-client run per window on 2 cores), where windows
of 32 to 128 were within run-to-run noise of each other and sending a round at once was slower."""


class StoppableGrid(Grid):
    """``inner`` (any Grid), except that every call raises :class:`Stopped` once ``stop`` is set,
    and :meth:`send_and_receive` keeps at most ``window`` messages in flight (None: all at once),
    waiting for replies in a loop that checks ``stop`` every ``poll`` seconds (the loop of flwr's
    own grids, which can only end at their timeout). Replies are the inner grid's, in the order it
    returns them; messages are not touched.

    Why a window: flwr's Simulation Engine (``vce_api.add_messages_to_queue``, flwr 1.42) looks for
    each node's next message every 0.1 s by scanning every message the in-memory link state holds
    (sent, and not yet answered and pulled), once per node: a cycle costs nodes x messages held.
    At 1,000 nodes, the 1,000 messages of a query or evaluation round sent at once make each cycle
    scan 10^6 entries; a window of a few dozen keeps the actors busy and the scans small."""

    def __init__(self, inner: Grid, stop: threading.Event, poll: float = 0.02, window: int | None = WINDOW):
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
def _flwr_log_level(level: int):
    logger = logging.getLogger("flwr")
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def _server_identity():
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


def num_clients(cfg: H.RunConfig, seed: int) -> int:
    """How many nodes a simulation of ``cfg`` needs (read off the task: the simulation's launcher
    knows the partition; the ServerApp itself never reads data)."""
    return len(_partition(cfg, seed)[0])


def run(cfg: H.RunConfig, seed: int, backend: str = "ray", shuffle: int | None = None,
        backend_cfg: dict[str, Any] | None = None, verbose: bool = False, window: int | None = WINDOW,
        timings: dict[str, float] | None = None) -> dict[str, Any]:
    """One federated run on Flower; returns the same record as :func:`hasa_core.run` (with
    ``provenance.runtime = "flower"``; ``round_seconds`` measured on the server).

    ``backend="ray"``: Flower's Simulation Engine (``flwr.simulation.run_simulation``, one Ray
    actor per CPU); ``backend="local"``: :class:`LocalGrid`, the same messages in this process,
    replies shuffled with seed ``shuffle``. A Ray run keeps at most ``window`` messages in flight
    (:class:`StoppableGrid`; None: every message of a round at once); ``timings``, when given, gets
    the seconds of the Ray run's phases: ``start-up and shut-down`` (outside the ServerApp), and the
    server's ``query``, ``train`` and ``evaluate`` messages (sending, waiting, replies).

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
    with _flwr_log_level(logging.INFO if verbose else logging.ERROR):
        if backend == "local":
            with _server_identity():
                records.append(serve(LocalGrid(client_app, k, shuffle), cfg, seed, k))
        else:
            # Ray logs a hint about ipywidgets at INFO when it is imported inside a notebook kernel
            logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
            from flwr.simulation import run_simulation
            app, stop, spent = ServerApp(), threading.Event(), {}

            @app.main()
            def _main(grid: Grid, context: Context) -> None:
                t0, timed = time.perf_counter(), StoppableGrid(grid, stop, window=window)
                try:
                    records.append(serve(timed, cfg, seed, k))
                    spent.update(server=time.perf_counter() - t0, **timed.seconds)
                except Stopped:
                    # Ctrl-C: end the clients' tasks in flight now (their errors unlogged), and return
                    # rather than raise, so that flwr gets the server's context at once and shuts Ray down
                    logging.getLogger("flwr").setLevel(logging.CRITICAL)
                    end_ray_actors()

            t0 = time.perf_counter()
            with warnings.catch_warnings(), stop_on_interrupt(stop):
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
    results_dir = results_dir or H.DEFAULT_RESULTS_DIR / "flower"
    return H.cached_run(cfg, seed, results_dir, runner=functools.partial(run, **kwargs), runtime="flower")


# =============================================================================================
# Measuring both engines
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
               run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=window, timings=phases))
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
"""The most Flower may cost against the in-process engine at 1,000 clients (issue 20), as the ratio
Flower / in-process of :func:`compare_engines`' training rounds, wall time and peak memory."""


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
        rec = run(cfg, seed, backend="ray", backend_cfg=backend_cfg, window=w, timings=timings)
        rows.append({"window": "all" if w is None else str(w), "wall seconds": time.perf_counter() - t0,
                     "seconds per round (median)": float(np.median(rec["round_seconds"])),
                     **{f"{phase} seconds": sec for phase, sec in timings.items()}, "load average before": load0})
        digests.add(rec["params_sha256"])
    if len(digests) > 1:
        raise RuntimeError(f"the window changed the parameters: {sorted(digests)}")
    return pd.DataFrame(rows).set_index("window")


# =============================================================================================
# `flwr run` that says when it failed
# =============================================================================================

def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports of 127.0.0.1 that were free a moment ago (the kernel's choice)."""
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def superlink_command(port: int, control_port: int, fleet_port: int) -> list[str]:
    """A SuperLink in simulation mode on 127.0.0.1 only, its Runtime HTTP API on ``port`` (what
    ``flwr`` talks to), its state in memory, installing nothing at run time."""
    return ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(port), "--control-api-address", f"127.0.0.1:{control_port}",
            "--fleet-api-address", f"127.0.0.1:{fleet_port}", "--disable-runtime-dependency-installation"]


def flower_config(port: int) -> str:
    """``$FLWR_HOME/config.toml`` whose default SuperLink connection, ``hasa``, is the one on ``port``."""
    return f'[superlink]\ndefault = "hasa"\n\n[superlink.hasa]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'


def failed_runs(ls_json: str) -> list[str]:
    """From ``flwr ls --format json``: 'run-id status (details)' of every run that did not end
    ``finished:completed`` (failed, stopped, or still pending or running). An answer that is not a
    run list counts as one failure."""
    try:
        runs = json.loads(ls_json)["runs"]
    except (ValueError, KeyError, TypeError):
        return [f"`flwr ls` gave no run list: {ls_json.strip()[:500]!r}"]
    return [f"run {r['run-id']} {r['status']} {r.get('status-details') or ''}".strip()
            for r in runs if r.get("status") != "finished:completed"] or ([] if runs else ["no run was recorded"])


def _wait_for_port(port: int, proc, timeout: float) -> None:
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"flower-superlink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _end_group(proc, grace: float = 10.0) -> None:
    """SIGTERM to the process group that ``proc`` leads (its own session: the SuperLink, its
    SuperExec and the simulation process it spawned), SIGKILL to what is left after ``grace`` s."""
    import subprocess
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def flwr_run(run_config: str = "", num_supernodes: int = 7, app_dir: Path | None = None,
             ready_timeout: float = 120.0, on_start: Any = None) -> int:
    """``flwr run`` of the app in ``app_dir`` (default: this repository) on a SuperLink of its own;
    returns 0 only when the run finished ``completed``, else 1 (``flwr run`` itself exits 0 when the
    ServerApp fails, e.g. on an invalid run config: "Exit Code: 700").

    The SuperLink (simulation mode, ``num_supernodes`` simulated SuperNodes, state in memory,
    ports the kernel found free) starts in a session of its own under a temporary ``FLWR_HOME``;
    afterwards, whatever happened, that process group (SuperLink, SuperExec, simulation process)
    and nothing else is ended, and the temporary ``FLWR_HOME`` is removed. The run's output is
    streamed to stdout. ``on_start``, if given, is called with the SuperLink's pid (also its
    process-group id) as soon as it has started."""
    import shutil
    import subprocess
    import sys
    import tempfile
    home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
    bin_dir = Path(sys.executable).parent  # flower-superlink and flwr sit beside this Python
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    port, control, fleet = free_ports(3)
    (home / "config.toml").write_text(flower_config(port))
    link = None
    try:
        with open(home / "superlink.log", "w") as log:
            link = subprocess.Popen(superlink_command(port, control, fleet), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        if on_start is not None:
            on_start(link.pid)
        _wait_for_port(port, link, ready_timeout)
        cmd = ["flwr", "run", str(app_dir or H.REPO), "hasa", "--stream",
               "--federation-config", f"num-supernodes={num_supernodes}"]
        if run_config:
            cmd += ["--run-config", run_config]
        code = subprocess.run(cmd, env=env).returncode
        ls = subprocess.run(["flwr", "ls", "hasa", "--format", "json"], env=env, capture_output=True, text=True)
        failures = ([f"flwr run exited with code {code}"] if code else []) + failed_runs(ls.stdout)
    except (RuntimeError, TimeoutError) as e:
        failures = [f"{e} (its log: {home / 'superlink.log'})"]
        home = None  # keep the log
    finally:
        if link is not None:
            _end_group(link)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
    for f in failures:
        print(f"flwr-run: FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


def write_node_files(out: Path, run_config: str = "", app_dir: Path | None = None) -> list[Path]:
    """Each SuperNode's files (:func:`hasa_core.write_node_files`) for the run that ``flwr run
    <app_dir> --run-config <run_config>`` starts: the app's ``[tool.flwr.app.config]`` (``app_dir``
    default: this repository) with the overrides in ``run_config``, read as ``flwr run`` reads them.
    Returns the paths written, the vocabulary file first; raises ValueError when the run's
    ``num-clients`` is not the benchmark's number of clients."""
    from flwr.common.config import get_fused_config_from_dir, parse_config_args
    cfg, seed, k, _ = _run_config_to_cfg(get_fused_config_from_dir(app_dir or H.REPO, parse_config_args([run_config])))
    paths = H.write_node_files(cfg, seed, out)
    if len(paths) - 1 != k:
        raise ValueError(f"the run config says num-clients={k}, but this benchmark has {len(paths) - 1} clients: "
                         f"pass num-clients={len(paths) - 1} to this command and to `flwr run`")
    return paths


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_flower", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("flwr-run", help="`flwr run` of this app on a SuperLink of its own; exits 1 when the run failed")
    r.add_argument("--run-config", default="",
                   help="passed to `flwr run --run-config`, e.g. \"policy='uniform' rounds=2\"")
    r.add_argument("--num-supernodes", type=int, default=7, help="simulated SuperNodes (the benchmark's clients)")
    n = sub.add_parser("node-files", help=f"write each SuperNode's files for a run: {H.VOCAB_FILE} for every "
                       f"node and {H.partition_file_name(0)}, ... (one per client, its data only)")
    n.add_argument("--out", type=Path, required=True, help="the folder to write them to")
    n.add_argument("--run-config", default="",
                   help="the run's `flwr run --run-config` overrides, e.g. \"seed=1 profile='paper'\"")
    args = ap.parse_args(argv)
    if args.cmd == "flwr-run":
        raise SystemExit(flwr_run(args.run_config, args.num_supernodes))
    if args.cmd == "node-files":
        try:
            paths = write_node_files(args.out, args.run_config)
        except (ValueError, H.DataError) as e:
            raise SystemExit(f"node-files: {e}")
        made_by = json.loads(paths[0].read_text())["made_by"]
        print(f"wrote {paths[0]} and {len(paths) - 1} partition files ({', '.join(p.name for p in paths[1:3])}, ...) "
              f"for {made_by['benchmark']}, seed {made_by['seed']}, data config key {made_by['config_key']}")


if __name__ == "__main__":
    _main()
