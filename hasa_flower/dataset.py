"""A node's data in the HASA Flower app: the one client it serves, and the files a deployed node holds.

In a simulation every node draws the benchmark's partition from the data set (who holds which
examples: :func:`hasa_core.partition`) and builds only the clients it serves, the first time it
serves each, keeping them. A deployed SuperNode builds its client from two files alone (it never
opens the data set): the vocabulary file every node gets and its own partition file, which
:func:`write_node_files` writes for a run; files written for another seed, data config or data set,
edited after they were written (each is sealed with a digest of its content) or inconsistent (title
lengths against tokens, the partition id and client count against the vocabulary file) fail the
node with one message that names the file.

Memory of a simulation: the digit images come from pools that every process maps from one file
(:func:`shared_digit_pools`), and a process keeps only its most recently served clients
(:data:`CLIENT_CACHE_MIB`), building again one it served before and let go.

Imports: flwr, :mod:`hasa_core`, :mod:`hasa_records` (atomic writes), :mod:`hasa_flower.wire`.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
from collections import OrderedDict
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

NODE_FILES_FORMAT = 2
"""Version of the node files' layout (:func:`write_node_files`); bump it with any change to it.
    1  maker, client count and vocabulary; a partition file's maker, id, name and arrays
    2  each file sealed with a digest of its content; a partition file names the client count and
       the digest of the vocabulary file it was written with"""


VOCAB_FILE = "vocab.json"


class NodeFilesError(ValueError):
    """A node file that cannot serve this run: written for another run (another seed, data config,
    data set, engine or layout), edited after it was written (its digest), inconsistent, or not
    readable. The message names the file."""


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


def _json_digest(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def vocab_digest(made_by: dict[str, Any], vocab: Sequence[str], num_clients: int) -> str:
    """The digest that seals a vocabulary file: :func:`_json_digest` of its content."""
    return _json_digest({"made_by": made_by, "num_clients": num_clients, "vocab": vocab})


def arrays_digest(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """The digest that seals a partition file: sha256 of its header without ``digest`` (canonical
    JSON), then of each array in name order: its name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "digest"}, sort_keys=True,
                                  separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _is_count(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _unsealed(path: Path) -> NodeFilesError:
    return NodeFilesError(f"{path} does not match its own digest: its content was changed after it was "
                          "written. Write this node's files again (python -m hasa_flower node-files).")


def write_vocab_file(path: Path, made_by: dict[str, Any], vocab: Sequence[str], num_clients: int) -> Path:
    """The file every node gets: its maker (:func:`node_files_identity`), the number of clients,
    the shared vocabulary (digits: none) and their :func:`vocab_digest`, as JSON, written
    atomically. Returns ``path``."""
    records.write_json_atomic(path, {"made_by": made_by, "num_clients": num_clients, "vocab": list(vocab),
                                     "digest": vocab_digest(made_by, vocab, num_clients)})
    return path


def read_vocab_file(path: Path, cfg: H.RunConfig, seed: int) -> tuple[tuple[str, ...], int, str]:
    """(vocabulary, number of clients, digest) of a vocabulary file, after :func:`check_node_file`,
    its digest (:func:`vocab_digest`) and its consistency: a positive client count, distinct
    strings as the vocabulary.
    Raises :class:`NodeFilesError` naming the file otherwise."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NodeFilesError(f"{path} is not a readable vocabulary file ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise NodeFilesError(f"{path} holds a {type(d).__name__}, not a vocabulary file")
    check_node_file(path, d.get("made_by"), cfg, seed)
    vocab, k = d.get("vocab"), d.get("num_clients")
    if d.get("digest") != vocab_digest(d["made_by"], vocab, k):
        raise _unsealed(path)
    if not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab) and len(set(vocab)) == len(vocab)):
        raise NodeFilesError(f"{path}: its vocabulary is not a list of distinct words")
    if not _is_count(k, 1):
        raise NodeFilesError(f"{path}: num_clients {k!r} is not a positive integer")
    return tuple(vocab), k, d["digest"]


def write_partition_file(path: Path, made_by: dict[str, Any], k: int, name: str, arrays: dict[str, np.ndarray],
                         num_clients: int, vocab_file_digest: str) -> Path:
    """Client ``k``'s file: a compressed ``.npz`` (no pickled objects) of its :func:`client_arrays`
    and a ``header`` (JSON: its maker, ``partition_id``, ``name``, ``num_clients``, the digest of
    the vocabulary file written with it and its own :func:`arrays_digest`), written atomically."""
    buf = io.BytesIO()
    header = {"made_by": made_by, "partition_id": k, "name": name, "num_clients": num_clients,
              "vocab_digest": vocab_file_digest}
    header["digest"] = arrays_digest(header, arrays)
    np.savez_compressed(buf, header=np.array(json.dumps(header)), **arrays)
    return records.write_bytes_atomic(path, buf.getvalue())


def partition_problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """What is inconsistent in a partition file's arrays: the lengths of each part's titles
    (``*_lengths``, non-negative integers) must add up to its tokens (``*_tokens``), and each
    part's images (``x_*``) must have one label (``y_*``) each."""
    problems = []
    for part in ("train", "test"):
        tokens, lengths = arrays.get(f"{part}_tokens"), arrays.get(f"{part}_lengths")
        if (tokens is None) != (lengths is None):
            problems.append(f"{part}_tokens and {part}_lengths go together; it has only one of them")
        elif lengths is not None:
            if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
                problems.append(f"{part}_lengths is not a list of title lengths")
            elif int(lengths.sum()) != len(tokens):
                problems.append(f"{part}_lengths add up to {int(lengths.sum())} tokens, "
                                f"{part}_tokens holds {len(tokens)}")
        x, y = arrays.get(f"x_{part}"), arrays.get(f"y_{part}")
        if (x is None) != (y is None) or (x is not None and len(x) != len(y)):
            problems.append(f"x_{part} and y_{part} do not hold one label per image")
    return problems


def read_partition_file(path: Path, cfg: H.RunConfig, seed: int) -> tuple[int, str, dict[str, np.ndarray], dict]:
    """(partition id, client name, arrays, header) of a partition file, after
    :func:`check_node_file`, its digest (:func:`arrays_digest`) and its consistency
    (:func:`partition_problems`, an id within its client count). Raises :class:`NodeFilesError`
    naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files}
        header = json.loads(str(arrays.pop("header")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise NodeFilesError(f"{path} is not a readable partition file ({type(e).__name__}: {e})") from e
    if not isinstance(header, dict):
        raise NodeFilesError(f"{path}: its header is not a JSON object")
    check_node_file(path, header.get("made_by"), cfg, seed)
    if header.get("digest") != arrays_digest(header, arrays):
        raise _unsealed(path)
    k, n = header.get("partition_id"), header.get("num_clients")
    problems = partition_problems(arrays)
    if not (_is_count(n, 1) and _is_count(k) and k < n):
        problems.append(f"partition_id {k!r} is not one of its num_clients {n!r} clients")
    if problems:
        raise NodeFilesError(f"{path} is inconsistent: {'; '.join(problems)}")
    return k, str(header["name"]), arrays, header


def write_node_files(cfg: H.RunConfig, seed: int, out: Path, num_clients: int | None = None) -> list[Path]:
    """What a deployment gives its nodes instead of the data set, for (``cfg``, ``seed``): in
    ``out``, :data:`VOCAB_FILE` (:func:`write_vocab_file`) for every node and, per client k,
    :func:`partition_file_name` (k) (:func:`write_partition_file`) with exactly client k's split
    examples as the central builder draws them (:func:`partition`), and
    nothing of any other client. Every client is built from its arrays first, so a client the
    central builder refuses (no training or test examples) fails here too; nothing is written
    until every client is built, nor when ``num_clients`` (the run's, when given) is not the
    benchmark's number of clients (ValueError). Returns the paths written, the vocabulary file
    first."""
    made_by, part = node_files_identity(cfg, seed), H.partition(cfg, seed)
    if num_clients is not None and num_clients != len(part):
        raise ValueError(f"the run config says num-clients={num_clients}, but this benchmark has {len(part)} "
                         f"clients: pass num-clients={len(part)} to this command and to `flwr run` "
                         "(nothing was written)")
    clients = []
    for k, name in enumerate(part.names):
        arrays = H.client_arrays(cfg.benchmark, part.split(k))
        H.client_of_arrays(cfg.benchmark, name, arrays, part.vocab)
        clients.append((name, arrays))
    sealed_vocab = vocab_digest(made_by, part.vocab, len(clients))
    paths = [write_partition_file(out / partition_file_name(k), made_by, k, name, arrays, len(clients), sealed_vocab)
             for k, (name, arrays) in enumerate(clients)]
    return [write_vocab_file(out / VOCAB_FILE, made_by, part.vocab, len(clients)), *paths]


def node_task(cfg: H.RunConfig, seed: int, vocab_file: Path, partition_file: Path) -> tuple[int, H.Task]:
    """A deployed node's view of the benchmark, from its two files alone (no data set is read):
    (its partition id k, a :class:`hasa_core.Task` whose one client is client k, tensor for tensor the
    client k of :func:`load_task` (``cfg``, ``seed``), with the same vocabulary and architecture).
    Raises :class:`NodeFilesError` when either file was written for another run, edited, or
    inconsistent, alone or with the other."""
    vocab, num_clients, sealed_vocab = read_vocab_file(vocab_file, cfg, seed)
    k, name, arrays, header = read_partition_file(partition_file, cfg, seed)
    if header["num_clients"] != num_clients:
        raise NodeFilesError(f"{partition_file} was written for {header['num_clients']} clients, {vocab_file} "
                             f"says {num_clients}: the two files come from different writes")
    if header.get("vocab_digest") != sealed_vocab:
        raise NodeFilesError(f"{partition_file} was written with another vocabulary file than {vocab_file}: "
                             "give the node the files of one write (python -m hasa_flower node-files)")
    client = H.client_of_arrays(cfg.benchmark, name, arrays, vocab)
    task = H.task_of(cfg, [client], vocab)
    return k, H.on_device(task, cfg.device)


# ---------------------------------------------------------------------------------------------
# The client a node serves
# ---------------------------------------------------------------------------------------------

POOL_FORMAT = 1
"""Version of the shared digit pools' files (:func:`shared_digit_pools`); bump it with any change to them."""


def pool_dir() -> Path:
    """Where the shared digit pools are kept: ``$HASA_POOL_DIR``, else ``$XDG_CACHE_HOME/hasa/digit-pools``
    (default ``~/.cache/hasa/digit-pools``)."""
    if chosen := os.environ.get("HASA_POOL_DIR"):
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hasa" / "digit-pools"


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    records.write_bytes_atomic(path, buf.getvalue())


def shared_digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    """:func:`hasa_core.digit_pool` of every digit domain (raw uint8 images, int64 labels, size of the
    official training part), as read-only arrays mapped from uncompressed copies in
    :func:`pool_dir`, so that every process of a simulation (driver and Ray actors) shares one copy
    in the page cache instead of holding its own. A copy is named by the sha256 of the data file it
    was made from and written atomically, the first time a process needs it, from
    :func:`hasa_core.digit_pool` (which checks that sha256): same bytes, so the same clients."""
    out, root = {}, pool_dir()
    for dom in H.DIGIT_DOMAINS:
        stem = root / f"v{POOL_FORMAT}-{dom}-{H.DIGIT_FILES[dom][1][:16]}"
        paths = [stem.with_suffix(f".{part}.npy") for part in ("x", "y", "n_train")]
        if not all(p.is_file() for p in paths):
            x, y, n_train = H.digit_pool(dom)
            for path, array in zip(paths, (x, y, np.array(-1 if n_train is None else n_train, np.int64))):
                _save_npy(path, array)
        x, y = (np.asarray(np.load(p, mmap_mode="r", allow_pickle=False)) for p in paths[:2])
        n_train = int(np.load(paths[2], allow_pickle=False))
        out[dom] = (x, y, None if n_train < 0 else n_train)
    return out


def draw_partition(cfg: H.RunConfig, seed: int) -> H.Partition:
    """:func:`hasa_core.partition` (``cfg``, ``seed``), drawn as the engine draws it; for the digits,
    from :func:`shared_digit_pools` (the same examples, client for client, tensor for tensor)."""
    if cfg.benchmark != "digits" or H.BENCHMARKS["digits"].partition is not H.digits_partition:
        return H.partition(cfg, seed)
    pools = shared_digit_pools()
    refs = H.digits_refs(cfg, seed, pools)  # as hasa_core.digits_partition, over the shared pools
    return H.Partition(cfg, tuple(r.name for r in refs), tuple(refs), pools=pools)


CLIENT_CACHE_MIB = 16.0
"""At most this much of the clients a simulated node's process has built (their tensors, MiB) is
kept for the next message to the same client, the most recently served first (at least the last
one). A digits client costs about 1-2 ms to build from the shared pools and holds 9.4 kB per image
as float32; a Ray actor serving half of a 1,000-client federation would otherwise keep about
200 MB of them."""


def _nbytes(task: H.Task) -> int:
    return sum(t.nbytes for c in task.clients for part in (c.train, c.test) for batch in part for t in batch)


@functools.lru_cache(maxsize=2)
def _partition(cfg: H.RunConfig, seed: int) -> tuple[H.Partition, OrderedDict[int, tuple[H.Task, int]]]:
    """The benchmark's partition (:func:`draw_partition`: who holds which examples, no tensors),
    drawn once per process and (config, seed), and the clients kept from it (client k -> (its
    one-client task, bytes)), least recently served first."""
    return draw_partition(cfg, seed), OrderedDict()


def _client_task(cfg: H.RunConfig, seed: int, k: int) -> H.Task:
    """The one-client :class:`hasa_core.Task` of partition k, as a simulated node holds it: built
    when this process serves client k and not kept from before (a Ray actor serving many clients
    builds only those it serves), then kept within :data:`CLIENT_CACHE_MIB`; tensor for tensor
    client k of :func:`hasa_core.load_task`."""
    part, built = _partition(cfg, seed)
    if not 0 <= k < len(part):
        raise ValueError(f"partition-id {k} is outside the {len(part)} clients of this benchmark")
    if k in built:
        built.move_to_end(k)
        return built[k][0]
    task = H.on_device(part.task([k]), cfg.device)
    built[k] = (task, _nbytes(task))
    while len(built) > 1 and sum(n for _, n in built.values()) > CLIENT_CACHE_MIB * 2 ** 20:
        built.popitem(last=False)
    return task


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
