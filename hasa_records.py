"""The record store of the HASA artifact: one sealed, checked JSON record per (config, seed).

Its one job is keeping records: write them atomically, seal them with a digest of their content,
check them on read (:func:`read_record`), claim a record while it is computed, serve the cache
(:func:`cached_run`, :func:`fill_extras`), schedule many runs over worker processes
(:func:`run_many`), list the committed records (the manifest), re-run a sample of them bit for bit
(the audit), and keep the golden record that ``make test`` compares against.

Imports: :mod:`hasa_core` only (which computes a record and writes nothing). Command line::

    python -m hasa_records manifest [--check] | audit [--sample N] [--cheapest] | migrate | golden
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from hasa_core import (
    ENGINE_VERSION,
    EXTRAS,
    REPO,
    SWEEP,
    SWEEP_VERSION,
    RunConfig,
    config,
    cpu_model,
    exit_with_parent,
    linear_spend,
    run,
    same_machine_class,
    summarize_accuracies,
)

DEFAULT_RESULTS_DIR = REPO / "results"


def record_path(cfg: RunConfig, seed: int, results_dir: Path | None = None) -> Path:
    return (results_dir or DEFAULT_RESULTS_DIR) / "runs" / cfg.key() / f"seed{seed}.json"


def write_text_atomic(path: Path, text: str) -> Path:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8. Returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: a reader (or a full disk) never
    leaves half a file. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    """:func:`write_text_atomic` of ``obj`` as indented JSON."""
    write_text_atomic(path, json.dumps(obj, indent=1))


RECORD_FIELDS = ("config", "seed", "clients", "sizes", "scores", "widths", "budget", "budget_used",
                 "budget_frac", "accuracy", "mean", "worst", "tail", "accuracy_full_model", "curve",
                 "params_sha256", "provenance", "digest")


def content_digest(rec: dict[str, Any]) -> str:
    """sha256 of a record's content without its ``digest`` field: canonical JSON (sorted keys,
    no whitespace), so the digest does not depend on how the file is indented."""
    body = {k: v for k, v in rec.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(rec: dict[str, Any]) -> dict[str, Any]:
    """The record as it is stored: JSON-normalised (tuples become lists) with its
    :func:`content_digest` under ``digest``, which :func:`read_record` checks."""
    rec = json.loads(json.dumps({k: v for k, v in rec.items() if k != "digest"}))
    return {**rec, "digest": content_digest(rec)}


class BadRecord(ValueError):
    """A cached record that cannot be used: unreadable, incomplete, or made for another run."""


def _accuracies(values: Any, k: int, what: str) -> str | None:
    """Why ``values`` is not a list of k accuracies (real numbers in [0, 1]), or None."""
    if not isinstance(values, list) or len(values) != k:
        return f"{what} is not a list of {k} values (one per client)"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
        return f"{what} holds a value that is not a number in [0, 1] (NaN, a string, out of range)"
    return None


def consistency_problems(rec: dict[str, Any]) -> list[str]:
    """What is internally inconsistent in a record (empty when nothing is): every accuracy list
    has one number in [0, 1] per client; per-client lists (sizes, scores, widths) have the
    client count; the curve is non-empty, its last entry is the record's accuracy, and every
    mean / worst / tail equals the one recomputed from its accuracies; ``params_sha256`` is a
    sha256; widths, sizes and the budget fields agree with each other and with the config
    (:func:`budget_problems`)."""
    if not isinstance(rec.get("clients"), list) or not rec["clients"]:
        return ["clients is not a non-empty list"]
    k = len(rec["clients"])
    problems = [f"{f} does not have one entry per client ({k})" for f in ("sizes", "scores", "widths")
                if not isinstance(rec.get(f), list) or len(rec[f]) != k]
    entries = [("the record", rec)]
    if not isinstance(rec.get("curve"), list) or not rec["curve"]:
        problems.append("curve is empty or not a list")
    else:
        entries += [(f"curve entry {i}", c if isinstance(c, dict) else {}) for i, c in enumerate(rec["curve"])]
        if isinstance(rec["curve"][-1], dict) and rec["curve"][-1].get("accuracy") != rec.get("accuracy"):
            problems.append("the curve's last entry is not the record's accuracy")
    for what, e in entries:
        bad = _accuracies(e.get("accuracy"), k, f"{what}: accuracy")
        if bad:
            problems.append(bad)
            continue
        for name, value in summarize_accuracies(e["accuracy"]).items():
            if not isinstance(e.get(name), (int, float)) or abs(e[name] - value) > 1e-12:
                problems.append(f"{what}: {name} = {e.get(name)!r}, its accuracies give {value!r}")
    for f in ("accuracy_full_model", "accuracy_capped"):
        if f in rec:
            problems += [bad for bad in [_accuracies(rec[f], k, f)] if bad]
    if "accuracy_sweep" in rec:
        sw = rec["accuracy_sweep"]
        if not (isinstance(sw, dict) and isinstance(sw.get("grid"), list) and isinstance(sw.get("accuracy"), list)
                and len(sw["accuracy"]) == k and not any(_accuracies(a, len(sw["grid"]), "") for a in sw["accuracy"])):
            problems.append("accuracy_sweep is not one accuracy per grid width for each client")
    if not (isinstance(rec.get("params_sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", rec["params_sha256"])):
        problems.append("params_sha256 is not a sha256 hex digest")
    if all(isinstance(rec.get(f), list) and len(rec[f]) == k for f in ("sizes", "widths")):
        problems += budget_problems(rec)
    return problems


BUDGET_TOL = 1e-12
"""How far a record's budget_used and budget_frac may lie from the ones recomputed here (float rounding)."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def budget_problems(rec: dict[str, Any]) -> list[str]:
    """What is inconsistent in a record's allocation (empty when nothing is; its per-client lists
    have the client count): every width is a number in (0, 1] and every size a positive integer;
    ``budget_frac`` = ``budget_used`` / ``budget``; ``budget_kind`` is the one its config's policy
    spends. Under the linear budget (the published rule and its baselines) ``budget`` is the
    config's B and ``budget_used`` is sum_k n_k E[w_k] / sum_k n_k recomputed from ``widths`` and
    ``sizes`` (E[w] = w, for FjORD the mean of the levels it draws from, plus its widest slice
    with self-distillation: :func:`hasa_core.linear_spend`). Under the FLOP budget (our level
    rule) the budget and its spend depend on the architecture's cost, whose vocabulary comes from
    the data: only ``budget_used`` <= ``budget`` is checked there. Not checked anywhere: that the widths are the
    ones the policy gives for the record's scores, and the scores themselves (both need the
    data or the policy's rule)."""
    problems = []
    if not all(_number(w) and 0 < w <= 1 for w in rec["widths"]):
        problems.append("widths holds a value that is not a number in (0, 1]")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in rec["sizes"]):
        problems.append("sizes holds a value that is not a positive integer (a client's training examples)")
    not_numbers = [f for f in ("budget", "budget_used", "budget_frac") if not _number(rec.get(f))]
    if not_numbers:
        problems.append(f"{', '.join(not_numbers)} is not a finite number")
    elif rec["budget"] <= 0:
        problems.append(f"budget = {rec['budget']!r} is not positive")
    elif abs(rec["budget_frac"] - rec["budget_used"] / rec["budget"]) > BUDGET_TOL:
        problems.append(f"budget_frac = {rec['budget_frac']!r}, its budget_used / budget gives "
                        f"{rec['budget_used'] / rec['budget']!r}")
    if problems:
        return problems
    try:
        cfg = RunConfig.from_dict(rec["config"])
    except (TypeError, ValueError) as e:
        return [f"config is not a valid run config ({e})"]
    kind = "flops" if cfg.level_rule else "linear"
    if rec.get("budget_kind", kind) != kind:
        problems.append(f"budget_kind = {rec['budget_kind']!r}, but policy {cfg.policy!r} spends the {kind} budget")
    elif kind == "flops":
        if rec["budget_used"] > rec["budget"] * (1 + 1e-9):
            problems.append(f"budget_used = {rec['budget_used']!r} exceeds the FLOP budget {rec['budget']!r}")
    else:
        if rec["budget"] != cfg.budget:
            problems.append(f"budget = {rec['budget']!r}, its config's B is {cfg.budget!r}")
        used = linear_spend(cfg, rec["widths"], rec["sizes"])
        if abs(used - rec["budget_used"]) > BUDGET_TOL:
            problems.append(f"budget_used = {rec['budget_used']!r}, its widths and sizes give {used!r}")
    return problems


def read_record(path: Path, cfg: RunConfig, seed: int, runtime: str = "in-process") -> dict[str, Any]:
    """A cached record, checked: it parses, holds every field of :data:`RECORD_FIELDS`, its
    content matches its own ``digest`` (:func:`content_digest`: nothing was edited), it is
    internally consistent (:func:`consistency_problems`), and it was made for exactly this
    (config, seed) by this :data:`ENGINE_VERSION` and by ``runtime`` (``provenance.runtime``:
    ``in-process``, or ``flower`` for the Flower app). Raises :class:`BadRecord` naming the file
    otherwise."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRecord(f"{path} is not a readable JSON record ({type(e).__name__}: {e})") from e
    if not isinstance(rec, dict):
        raise BadRecord(f"{path} holds a {type(rec).__name__}, not a run record")
    missing = [f for f in RECORD_FIELDS if f not in rec]
    if missing:
        raise BadRecord(f"{path} lacks the fields {missing}")
    if rec["digest"] != content_digest(rec):
        raise BadRecord(f"{path} does not match its own digest: its content was changed after it was written")
    problems = consistency_problems(rec)
    if problems:
        raise BadRecord(f"{path} is inconsistent: {'; '.join(problems[:3])}")
    prov = rec["provenance"] if isinstance(rec["provenance"], dict) else {}
    if prov.get("engine") != ENGINE_VERSION:
        raise BadRecord(f"{path} was made by engine version {prov.get('engine')}, this code is {ENGINE_VERSION}")
    if prov.get("runtime", "in-process") != runtime:
        raise BadRecord(f"{path} was made by the {prov.get('runtime', 'in-process')} runtime, "
                        f"this cache holds {runtime} records")
    if rec["seed"] != seed or rec["config"] != json.loads(json.dumps(cfg.as_dict())):
        other = rec["config"] if isinstance(rec["config"], dict) else {}
        raise BadRecord(f"{path} is the record of another run (seed {rec['seed']}, policy "
                        f"{other.get('policy')!r}, extraction {other.get('extraction')!r}), not of "
                        f"{cfg.key()} seed {seed}")
    return rec


def _set_aside(path: Path, reason: BadRecord) -> None:
    """Move a bad record to a new, unique ``<name>.bad-<time>-<n>`` beside it (never over an
    earlier one), with a warning that names both. A record that vanished meanwhile is no error."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count():
        aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        try:
            os.link(path, aside)  # fails if ``aside`` exists: no earlier set-aside is overwritten
        except FileExistsError:
            continue
        except FileNotFoundError:
            return
        path.unlink(missing_ok=True)
        break
    warnings.warn(f"{reason}; moved it to {aside.name} and recomputing.", stacklevel=3)


STALE_TMP_SECONDS = 3600
"""A ``.tmp-*`` file in a record folder older than this is left over from a killed writer."""


def _remove_stale_tmp(folder: Path) -> None:
    now = time.time()
    for tmp in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()


def cached_record(cfg: RunConfig, seed: int, results_dir: Path | None = None,
                  runtime: str = "in-process") -> dict[str, Any] | None:
    """The checked cached record of (cfg, seed), or None. A bad record is moved aside with a warning
    that names it (never used, never fatal), so the run is recomputed."""
    path = record_path(cfg, seed, results_dir)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, where the record of {cfg.key()} seed {seed} belongs; "
                                "remove or rename it, then run again")
    if not path.is_file():
        return None
    try:
        return read_record(path, cfg, seed, runtime)
    except FileNotFoundError:  # removed between the check and the read
        return None
    except BadRecord as e:
        _set_aside(path, e)
        return None


@contextlib.contextmanager
def claim(path: Path) -> Iterator[None]:
    """Hold an exclusive claim on the record at ``path`` (``flock`` on a hidden ``.<name>.lock``
    beside it) while computing it, so that concurrent processes never compute one record twice:
    a second claimant waits, then finds the record. The kernel drops the claim when its holder
    dies, however it dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_run(cfg: RunConfig, seed: int, results_dir: Path | None = None,
               runner: Callable[[RunConfig, int], dict[str, Any]] | None = None,
               runtime: str = "in-process") -> dict[str, Any]:
    """The record of (cfg, seed): read from the cache (checked), or computed under a :func:`claim`
    by ``runner`` (default :func:`run`), sealed and cached."""
    return _cached_or_computed(cfg, seed, results_dir, runner, runtime)[0]


def _cached_or_computed(cfg: RunConfig, seed: int, results_dir: Path | None = None,
                        runner: Callable[[RunConfig, int], dict[str, Any]] | None = None,
                        runtime: str = "in-process") -> tuple[dict[str, Any], bool]:
    """:func:`cached_run`, and whether this call computed the record (False: it was in the cache,
    or another process made it while this one waited for the claim)."""
    rec = cached_record(cfg, seed, results_dir, runtime)
    if rec is not None:
        return rec, False
    path = record_path(cfg, seed, results_dir)
    with claim(path):
        rec = cached_record(cfg, seed, results_dir, runtime)  # made meanwhile by another process?
        if rec is not None:
            return rec, False
        _remove_stale_tmp(path.parent)
        rec = sealed((runner or run)(cfg, seed))
        write_json_atomic(path, rec)
    return rec, True


class NotReproduced(RuntimeError):
    """A re-run of a cached record did not reproduce its parameters bit for bit."""


def has_extras(rec: dict[str, Any], fields: Sequence[str] = EXTRAS) -> bool:
    """Whether ``rec`` holds every run-extra field of ``fields``, its sweep of :data:`SWEEP_VERSION`."""
    return all(f in rec for f in fields) and (
        "accuracy_sweep" not in fields or rec["accuracy_sweep"].get("version") == SWEEP_VERSION)


def fill_extras(cfg: RunConfig, seed: int, results_dir: Path | None = None,
                fields: Sequence[str] = EXTRAS) -> dict[str, Any]:
    """The record of (cfg, seed) with the run extras ``fields`` (:data:`EXTRAS`, :data:`SWEEP`). A
    record made before them is re-run; the
    re-run must give the record's ``params_sha256`` bit for bit (else :class:`NotReproduced`), and
    only then are the extras added and the record rewritten (atomically). Its numbers, and so every
    table made from it, are unchanged. A record not yet made is made with them: one training."""
    return _filled(cfg, seed, results_dir, fields)[0]


def _filled(cfg: RunConfig, seed: int, results_dir: Path | None = None,
            fields: Sequence[str] = EXTRAS) -> tuple[dict[str, Any], bool]:
    """:func:`fill_extras`, and whether this call trained (made the record, or re-ran it for its
    extras); False when the record with its extras was in the cache or made by another process."""
    runner = functools.partial(run, sweep=any(f in SWEEP for f in fields))
    rec, computed = _cached_or_computed(cfg, seed, results_dir, runner)
    if has_extras(rec, fields):
        return rec, computed
    if not same_machine_class(rec["provenance"]):
        raise NotReproduced(f"{cfg.key()} seed {seed} was made on {rec['provenance'].get('cpu')} "
                            f"({rec['provenance'].get('isa', 'instruction set not recorded')}); a re-run here "
                            f"({cpu_model()}) would not reproduce it bit for bit, so its extras {list(fields)} "
                            "can be filled only on a machine of that class")
    new = json.loads(json.dumps(runner(cfg, seed)))
    if new["params_sha256"] != rec["params_sha256"]:
        raise NotReproduced(f"re-running {cfg.key()} seed {seed} gave parameters {new['params_sha256'][:12]}…, "
                            f"the record holds {rec['params_sha256'][:12]}…: this code does not reproduce it")
    rec = sealed({**rec, **{f: new[f] for f in fields}})
    write_json_atomic(record_path(cfg, seed, results_dir), rec)
    return rec, True


RECORD_DIRS = ("runs", "flower/runs", "engine1/runs")
"""The record caches in a results folder that are committed: in-process, Flower, and the archive of
engine-1 records (kept for the history; no current code recomputes them)."""


MANIFEST = "records.manifest"
"""In the results folder: one line ``<digest>  <path>`` per committed record, checked by make test."""


def record_files(results_dir: Path | None = None) -> list[Path]:
    """Every record file of :data:`RECORD_DIRS`, sorted."""
    root = results_dir or DEFAULT_RESULTS_DIR
    return sorted(p for d in RECORD_DIRS for p in (root / d).glob("*/seed*.json"))


def migrate_records(results_dir: Path | None = None) -> dict[str, int]:
    """Give every record (of any profile) that has no ``digest`` its :func:`sealed` form:
    the same content plus the digest (no number changes, nothing is recomputed). A record of this
    engine that is not internally consistent is left as it is and counted (an archived record of
    an older engine, in an older format, is sealed as it is). Returns counts by outcome."""
    counts = {"sealed": 0, "already sealed": 0, "inconsistent, left alone": 0}
    for path in sorted((results_dir or DEFAULT_RESULTS_DIR).glob("**/runs/*/seed*.json")):  # every profile
        rec = json.loads(path.read_text(encoding="utf-8"))
        if "digest" in rec:
            counts["already sealed"] += 1
        elif _engine_of(rec) == ENGINE_VERSION and consistency_problems(rec):
            counts["inconsistent, left alone"] += 1
        else:
            write_json_atomic(path, sealed(rec))
            counts["sealed"] += 1
    return counts


def _engine_of(rec: dict[str, Any]) -> Any:
    return rec["provenance"].get("engine") if isinstance(rec.get("provenance"), dict) else None


class ManifestError(ValueError):
    """The manifest, or a record it lists, cannot be read; the message names every such file."""


def _load_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in ``path``, None), or (None, why it is not one: missing, unreadable,
    truncated, not an object)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "listed, but missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"not a readable JSON record ({type(e).__name__}: {e})"
    if not isinstance(rec, dict):
        return None, f"holds a {type(rec).__name__}, not a run record"
    return rec, None


def _not_a_record_path(rel: str) -> str | None:
    """Why ``rel`` (a manifest entry) is not the path of a record file in the results folder, or None."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        return "leaves the results folder"
    if str(p.parent.parent) not in RECORD_DIRS or not fnmatch.fnmatchcase(p.name, "seed*.json"):
        return f"is not a record path ({' | '.join(RECORD_DIRS)}, then <key>/seed<N>.json)"
    return None


def read_manifest(results_dir: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """(record path relative to the results folder -> listed digest, problems) of :data:`MANIFEST`,
    whose every non-empty line is ``<sha256>  <path>``. A line that is not, a path that leaves the
    results folder or is no record path, and a path listed twice are problems (each naming its
    line), and are left out of the listing; a missing manifest is one problem."""
    path = (results_dir or DEFAULT_RESULTS_DIR) / MANIFEST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}, [f"{path} does not exist (python -m hasa_records manifest writes it)"]
    except (OSError, UnicodeDecodeError) as e:
        return {}, [f"{path} cannot be read ({type(e).__name__}: {e})"]
    listed: dict[str, str] = {}
    problems = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}|UNSEALED", digest):
            problems.append(f"{MANIFEST} line {n}: not '<sha256>  <record path>': {line[:100]!r}")
        elif why := _not_a_record_path(rel):
            problems.append(f"{MANIFEST} line {n}: {rel!r} {why}")
        elif rel in listed:
            problems.append(f"{MANIFEST} line {n}: {rel} is listed twice")
        else:
            listed[rel] = digest
    return listed, problems


def write_manifest(results_dir: Path | None = None) -> Path:
    """Write :data:`MANIFEST`: every record file with its stored digest. Raises
    :class:`ManifestError` naming every record file that is not a readable record (and writes
    nothing then)."""
    root = results_dir or DEFAULT_RESULTS_DIR
    lines, problems = [], []
    for p in record_files(root):
        rec, why = _load_record(p)
        if why:
            problems.append(f"{p.relative_to(root)}: {why}")
        else:
            lines.append(f"{rec.get('digest', 'UNSEALED')}  {p.relative_to(root)}")
    if problems:
        raise ManifestError(f"{len(problems)} record file(s) cannot be read, so {MANIFEST} was not written: "
                            + "; ".join(problems))
    path = root / MANIFEST
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return path


def manifest_problems(results_dir: Path | None = None, tracked: Sequence[str] | None = None) -> list[str]:
    """Everything that disagrees with :data:`MANIFEST`, each problem naming its file: a line that
    is not a record entry (:func:`read_manifest`); a listed record that is missing, unreadable or
    truncated, listed as unsealed, whose stored digest is not the listed one, or whose content does
    not match its digest; and a record file (of ``tracked``, paths relative to the results folder,
    when given: the committed ones) not listed."""
    root = results_dir or DEFAULT_RESULTS_DIR
    listed, problems = read_manifest(root)
    if not (root / MANIFEST).is_file():
        return problems
    for rel, digest in listed.items():
        rec, why = _load_record(root / rel)
        if why:
            problems.append(f"{rel}: {why}")
        elif digest == "UNSEALED":
            problems.append(f"{rel}: listed as unsealed (python -m hasa_records migrate seals it)")
        elif rec.get("digest") != digest:
            problems.append(f"{rel}: its digest is not the one listed")
        elif content_digest(rec) != digest:
            problems.append(f"{rel}: its content does not match its digest (edited)")
    files = {str(p.relative_to(root)) for p in record_files(root)}
    present = files if tracked is None else files & set(tracked)
    problems += [f"{rel}: a record not listed in {MANIFEST}" for rel in sorted(present - set(listed))]
    return problems


def audit(results_dir: Path | None = None, sample: int = 1, cheapest: bool = False,
          seed: int = 0) -> list[dict[str, Any]]:
    """Re-run ``sample`` of the records this code serves (:func:`auditable`: this engine, cached
    under its config's current key, made on a machine of this class) in this process (the
    cheapest by recorded seconds, or drawn with ``seed``) and compare the parameters bit for bit
    (``params_sha256``) and the per-client accuracies. Returns one row per record with ``same``
    True or False; none when no record qualifies. Raises ValueError unless ``sample`` is an
    integer >= 1, and :class:`ManifestError` when a listed record cannot be read."""
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
        raise ValueError(f"sample (how many records to re-run) must be an integer >= 1; got {sample!r}")
    root = results_dir or DEFAULT_RESULTS_DIR
    recs = auditable(root)
    if cheapest:
        chosen = sorted(recs, key=lambda x: x[1]["seconds"])[:sample]
    else:
        picks = np.random.default_rng(seed).choice(len(recs), size=min(sample, len(recs)), replace=False)
        chosen = [recs[i] for i in sorted(picks)]
    rows = []
    for rel, rec in chosen:
        new = run(RunConfig.from_dict(rec["config"]), rec["seed"])
        rows.append({"record": rel, "seconds": round(new["seconds"], 1),
                     "same": new["params_sha256"] == rec["params_sha256"] and new["accuracy"] == rec["accuracy"]})
    return rows


def auditable(results_dir: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(path, record) of every record of :data:`MANIFEST` that a re-run here must reproduce bit for
    bit: made by this :data:`ENGINE_VERSION`, still under its config's current key (a record the
    cache serves, not one a versioned change superseded), and made on a machine of this class
    (:func:`hasa_core.same_machine_class`). Raises :class:`ManifestError` naming every problem
    when the manifest or a record of this engine it lists cannot be read."""
    root = results_dir or DEFAULT_RESULTS_DIR
    listed, problems = read_manifest(root)
    chosen = []
    for rel in listed:
        rec, why = _load_record(root / rel)
        if why or _engine_of(rec) != ENGINE_VERSION:
            problems += [f"{rel}: {why}"] if why else []
            continue
        try:
            served = Path(rel).parent.name == RunConfig.from_dict(rec["config"]).key()
            here = same_machine_class(rec["provenance"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(f"{rel}: not a run record of this engine ({type(e).__name__}: {e})")
            continue
        if served and here:
            chosen.append((rel, rec))
    if problems:
        raise ManifestError(f"{len(problems)} problem(s) with {root / MANIFEST} or the records it lists: "
                            + "; ".join(problems) + " (python -m hasa_records manifest --check lists them)")
    return chosen


GOLDEN = REPO / "tests" / "golden" / "medium-smoke-hasa-seed0.json"


def golden_config() -> RunConfig:
    """The short smoke run whose record is committed as the golden record (``make test`` re-runs
    it and compares numbers and parameter digest)."""
    return config("smoke", policy="hasa", rounds=2, eval_every=1, max_examples_per_client=60)


def write_golden(path: Path = GOLDEN) -> Path:
    """Write the golden record: :func:`golden_config`'s seed-0 record with its cache ``key`` (the
    versions that made it), without the wall seconds."""
    rec = run(golden_config(), 0)
    rec.pop("seconds")
    write_json_atomic(path, {"key": golden_config().key(), **rec})
    return path


def _cached_run_in_worker(cfg: RunConfig, seed: int, results_dir: Path | None, extras: Sequence[str] = ()) -> bool:
    """Whether this process trained for the record (the parent reads the record back)."""
    return _filled(cfg, seed, results_dir, extras)[1]  # without extras, cached_run


def run_many(cfgs: Sequence[RunConfig] | RunConfig, seeds: Sequence[int], n_jobs: int = 2,
             results_dir: Path | None = None, desc: str = "runs", progress: bool = True,
             extras: Sequence[str] = (), tally: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every (config, seed) pair of ``cfgs`` x ``seeds`` (configs outer), through :func:`run_pairs`."""
    cfgs = [cfgs] if isinstance(cfgs, RunConfig) else list(cfgs)
    return run_pairs([(c, s) for c in cfgs for s in seeds], n_jobs, results_dir, desc, progress, extras, tally)


def run_pairs(pairs: Sequence[tuple[RunConfig, int]], n_jobs: int = 2, results_dir: Path | None = None,
              desc: str = "runs", progress: bool = True, extras: Sequence[str] = (),
              tally: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every (config, seed) pair, cached, in ``n_jobs`` worker processes (one pool, the pairs
    submitted in the given order), with a progress bar.
    Records without the run-extra fields ``extras`` (e.g. :data:`EXTRAS`) are re-run to fill them
    (:func:`fill_extras`).

    Says how many records it reused and how many were missing; once done, how many of those this
    process computed and how many another process (a concurrent precompute, say) made meanwhile:
    found in the cache when their turn came (no record is computed twice, see :func:`claim`).
    ``tally``, when given, gets these counts added under ``reused``, ``computed`` and
    ``made elsewhere``. On Ctrl-C, a Jupyter kernel
    interrupt or the first failing run, the queued runs are cancelled at once; every finished
    record stays cached (runs already in progress finish and are cached too), and the error says
    that a rerun resumes. Returns the records in the order of ``pairs``."""
    extras = tuple(extras)
    jobs = [(c, s, results_dir, extras) for c, s in pairs]
    found = [cached_record(*j[:3]) for j in jobs]
    found = [None if rec is not None and not has_extras(rec, extras) else rec for rec in found]
    todo = [j for j, rec in zip(jobs, found) if rec is None]
    if progress:
        print(f"{desc}: {len(jobs) - len(todo)} of {len(jobs)} records reused from the cache, "
              f"{len(todo)} to compute")
    done = computed = 0
    try:
        if todo and n_jobs > 1:
            pool = ProcessPoolExecutor(min(n_jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                       initializer=exit_with_parent, initargs=(os.getpid(),))
            try:
                futures = {pool.submit(_cached_run_in_worker, *j): j for j in todo}
                for fut in tqdm(as_completed(futures), total=len(todo), desc=desc, disable=not progress):
                    computed += fut.result()
                    done += 1
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        else:
            for j in tqdm(todo, desc=desc, disable=not (todo and progress)):
                computed += _cached_run_in_worker(*j)
                done += 1
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted: {done} of {len(todo)} new records finished and cached, "
                                "the queued runs cancelled; run the same call (or make reproduce) again to "
                                "resume from the cache.") from None
    except BrokenProcessPool as e:
        raise RuntimeError(f"a worker process died ({e}); {done} of {len(todo)} new records are cached. "
                           "Run the same call again to resume; if it recurs, try n_jobs=1 to see the error.") from e
    except Exception as e:
        raise RuntimeError(f"a run failed: {type(e).__name__}: {e}. {done} of {len(todo)} new records "
                           "are cached and the queued runs were cancelled; fix the cause and run again "
                           "to resume from the cache.") from e
    if progress and todo:
        print(f"{desc}: {computed} of {len(todo)} computed by this process, {len(todo) - computed} made "
              "meanwhile by another process")
    if tally is not None:
        for what, n in (("reused", len(jobs) - len(todo)), ("computed", computed),
                        ("made elsewhere", len(todo) - computed)):
            tally[what] = tally.get(what, 0) + n
    return [rec if rec is not None else cached_run(*j[:3]) for j, rec in zip(jobs, found)]


def _tracked_records() -> list[str] | None:
    """Paths (relative to results/) of the git-tracked files under results/, or None outside git."""
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.removeprefix("results/") for line in out.splitlines()]


def _at_least_one(text: str) -> int:
    """argparse type of ``--sample``: an integer >= 1, else one usage error (no traceback)."""
    import argparse
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (how many records to re-run); got {text!r}")
    return n


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_records", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("golden", help="rewrite the golden record that `make test` compares against")
    sub.add_parser("migrate", help="seal (add the digest to) every committed record that has none")
    m = sub.add_parser("manifest", help=f"write results/{MANIFEST}, or check the records against it")
    m.add_argument("--check", action="store_true", help="write nothing; fail on any disagreement")
    a = sub.add_parser("audit", help="re-run committed records and compare their parameters bit for bit")
    a.add_argument("--sample", type=_at_least_one, default=1, help="how many records (>= 1)")
    a.add_argument("--cheapest", action="store_true", help="the cheapest records instead of a random draw")
    a.add_argument("--seed", type=int, default=0, help="the random draw's seed")
    args = ap.parse_args(argv)
    if args.cmd == "golden":
        print(f"wrote {write_golden()}")
    elif args.cmd == "migrate":
        print(", ".join(f"{n} {what}" for what, n in migrate_records().items()))
    elif args.cmd == "manifest" and args.check:
        problems = manifest_problems(tracked=_tracked_records())
        for p in problems:
            print(f"MANIFEST: {p}")
        if problems:
            raise SystemExit(f"{len(problems)} record(s) disagree with results/{MANIFEST}")
        print(f"every committed record matches results/{MANIFEST}")
    elif args.cmd == "manifest":
        try:
            print(f"wrote {write_manifest()}")
        except ManifestError as e:
            raise SystemExit(f"manifest: {e}") from None
    else:
        try:
            rows = audit(sample=args.sample, cheapest=args.cheapest, seed=args.seed)
        except ManifestError as e:
            raise SystemExit(f"audit: {e}") from None
        if not rows:
            print(f"audit: no committed record of this engine was made on a machine of this class ({cpu_model()}); "
                  "records are bit-identical within a machine class only, so none is re-run here")
            return
        for r in rows:
            print(f"{'same' if r['same'] else 'DIFFERENT'}  {r['record']}  (re-run in {r['seconds']} s)")
        if not all(r["same"] for r in rows):
            raise SystemExit("audit: a re-run did not reproduce its record bit for bit")
        print(f"audit: {len(rows)} record(s) re-run, every one reproduced bit for bit")


if __name__ == "__main__":
    _main()
