"""A node's data in the HASA Flower app: the one client it serves, and the files a deployed node holds.

In a simulation every node draws the benchmark's partition from the data set (who holds which
examples: :func:`hasa_core.partition`) and builds only the clients it serves, the first time it
serves each, keeping them. A deployed SuperNode builds its client from two files alone (it never
opens the data set): the vocabulary file every node gets and its own partition file, which
:func:`write_node_files` writes for a run; files written for another seed, data config or data set
fail the node with one message.

Imports: flwr, :mod:`hasa_core`, :mod:`hasa_records` (atomic writes), :mod:`hasa_flower.wire`.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message

import hasa_core as H
import hasa_records as records
from hasa_flower.wire import read_config

# ---------------------------------------------------------------------------------------------
# Node files: what a deployed node holds instead of the data set
# ---------------------------------------------------------------------------------------------

NODE_FILES_FORMAT = 1
"""Version of the node files' layout (:func:`write_node_files`); bump it with any change to it."""


VOCAB_FILE = "vocab.json"


class NodeFilesError(ValueError):
    """A node file was written for another run: another seed, data config, data set, engine or layout."""


def node_files_identity(cfg: H.RunConfig, seed: int) -> dict[str, Any]:
    """What node files written for (``cfg``, ``seed``) record as their maker: the files' layout
    (:data:`NODE_FILES_FORMAT`), :data:`H.ENGINE_VERSION`, the benchmark, the sha256 of its data
    files, the config fields its data depend on (the benchmark's ``data_fields``: node files written
    for one config serve every config of the same benchmark that agrees on them), their key (a
    sha256 of those fields) and the seed. JSON-safe, and equal after a JSON round trip."""
    benchmark = H.BENCHMARKS[cfg.benchmark]
    fields = {f: getattr(cfg, f) for f in benchmark.data_fields}
    key = hashlib.sha256(json.dumps({"benchmark": cfg.benchmark, **fields}, sort_keys=True).encode()).hexdigest()
    return {"format": NODE_FILES_FORMAT, "engine": H.ENGINE_VERSION, "benchmark": cfg.benchmark,
            "data_sha256": benchmark.files, "data_config": fields, "config_key": key[:16],
            "seed": seed}


def check_node_file(path: Path, made_by: Any, cfg: H.RunConfig, seed: int) -> None:
    """Raise :class:`NodeFilesError`, naming every entry that differs, unless ``made_by`` (what
    the file at ``path`` says made it) is :func:`node_files_identity` of (``cfg``, ``seed``)."""
    want = node_files_identity(cfg, seed)
    if made_by == want:
        return
    got = made_by if isinstance(made_by, dict) else {}
    diffs = [f"{k} {got.get(k)!r} (this run: {v!r})" for k, v in want.items() if got.get(k) != v] or [
        f"made_by {made_by!r} (this run: {want!r})"]
    raise NodeFilesError(f"{path} was written for another run: {'; '.join(diffs)}. Write this node's files "
                         f"again for this run's config and seed (python -m hasa_flower node-files).")


def partition_file_name(k: int) -> str:
    return f"partition-{k}.npz"


def write_vocab_file(path: Path, made_by: dict[str, Any], vocab: Sequence[str], num_clients: int) -> Path:
    """The file every node gets: its maker (:func:`node_files_identity`), the number of clients
    and the shared vocabulary (digits: none), as JSON, written atomically. Returns ``path``."""
    records.write_json_atomic(path, {"made_by": made_by, "num_clients": num_clients, "vocab": list(vocab)})
    return path


def read_vocab_file(path: Path, cfg: H.RunConfig, seed: int) -> tuple[tuple[str, ...], int]:
    """(vocabulary, number of clients) of a vocabulary file, after :func:`check_node_file`."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    check_node_file(path, d.get("made_by"), cfg, seed)
    return tuple(d["vocab"]), int(d["num_clients"])


def write_partition_file(path: Path, made_by: dict[str, Any], k: int, name: str, arrays: dict[str, np.ndarray]) -> Path:
    """Client ``k``'s file: a compressed ``.npz`` (no pickled objects) of its :func:`client_arrays`
    and a ``header`` (JSON: its maker, ``partition_id`` and ``name``), written atomically."""
    buf = io.BytesIO()
    header = json.dumps({"made_by": made_by, "partition_id": k, "name": name})
    np.savez_compressed(buf, header=np.array(header), **arrays)
    return records.write_bytes_atomic(path, buf.getvalue())


def read_partition_file(path: Path, cfg: H.RunConfig, seed: int) -> tuple[int, str, dict[str, np.ndarray]]:
    """(partition id, client name, arrays) of a partition file, after :func:`check_node_file`."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    header = json.loads(str(arrays.pop("header")))
    check_node_file(path, header.get("made_by"), cfg, seed)
    return int(header["partition_id"]), str(header["name"]), arrays


def write_node_files(cfg: H.RunConfig, seed: int, out: Path) -> list[Path]:
    """What a deployment gives its nodes instead of the data set, for (``cfg``, ``seed``): in
    ``out``, :data:`VOCAB_FILE` (:func:`write_vocab_file`) for every node and, per client k,
    :func:`partition_file_name` (k) (:func:`write_partition_file`) with exactly client k's split
    examples as the central builder draws them (:func:`partition`), and
    nothing of any other client. Each client is built once from its arrays first, so a client the
    central builder refuses (no training or test examples) fails here too. Returns the paths
    written, the vocabulary file first."""
    made_by, part = node_files_identity(cfg, seed), H.partition(cfg, seed)
    paths = []
    for k, name in enumerate(part.names):
        arrays = H.client_arrays(cfg.benchmark, part.split(k))
        H.client_of_arrays(cfg.benchmark, name, arrays, part.vocab)
        paths.append(write_partition_file(out / partition_file_name(k), made_by, k, name, arrays))
    return [write_vocab_file(out / VOCAB_FILE, made_by, part.vocab, len(paths)), *paths]


def node_task(cfg: H.RunConfig, seed: int, vocab_file: Path, partition_file: Path) -> tuple[int, H.Task]:
    """A deployed node's view of the benchmark, from its two files alone (no data set is read):
    (its partition id k, a :class:`hasa_core.Task` whose one client is client k, tensor for tensor the
    client k of :func:`load_task` (``cfg``, ``seed``), with the same vocabulary and architecture).
    Raises :class:`NodeFilesError` when either file was written for another run."""
    vocab, num_clients = read_vocab_file(vocab_file, cfg, seed)
    k, name, arrays = read_partition_file(partition_file, cfg, seed)
    if not 0 <= k < num_clients:
        raise NodeFilesError(f"{partition_file}: partition {k} is outside the {num_clients} clients of {vocab_file}")
    client = H.client_of_arrays(cfg.benchmark, name, arrays, vocab)
    task = H.task_of(cfg, [client], vocab)
    return k, H.on_device(task, cfg.device)


# ---------------------------------------------------------------------------------------------
# The client a node serves
# ---------------------------------------------------------------------------------------------

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
    return node_task(cfg, seed, Path(vocab_file), Path(partition_file))


NODE_FILES = ("vocab-file", "partition-file")
"""Node-config keys of a deployed node's files (``python -m hasa_flower node-files`` writes them);
a node without them has ``partition-id`` and builds its client from the data set (simulation)."""


def my_client(msg: Message, context: Context) -> tuple[H.RunConfig, int, H.Task, int, H.Client]:
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


def num_clients(cfg: H.RunConfig, seed: int) -> int:
    """How many nodes a simulation of ``cfg`` needs (read off the task: the simulation's launcher
    knows the partition; the ServerApp itself never reads data)."""
    return len(_partition(cfg, seed)[0])
