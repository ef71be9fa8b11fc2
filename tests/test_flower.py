"""The Flower app: the same records as the in-process engine. The fast tests use Flower's message
path in this process (:class:`hasa_flower.LocalGrid`, no Ray); the one test marked ``simulation`` runs Flower's
Simulation Engine (Ray) and is deselected with ``-m "not simulation"``."""

import contextlib
import json

import pytest
import torch
from helpers import smoke

import hasa_core as H
import hasa_records as HR

flwr = pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")
from flwr.app import Message, MessageType, RecordDict  # noqa: E402

import hasa_flower as F  # noqa: E402
import hasa_flower.dataset as D  # noqa: E402
import hasa_flower.server_app as SA  # noqa: E402
import hasa_flower.simulation as S  # noqa: E402
from hasa_flower.__main__ import main as flower_main  # noqa: E402

COMPARED = ("clients", "sizes", "scores", "widths", "budget", "budget_used", "budget_frac", "accuracy",
            "mean", "worst", "tail", "accuracy_full_model", "curve", "params_sha256")


def assert_same_record(a, b):
    for key in COMPARED:
        assert a[key] == b[key], f"{key} differs between the engines"
    assert a.get("round_budget_used") == b.get("round_budget_used")


@pytest.mark.parametrize("extraction", sorted(H.EXTRACTIONS))
def test_flower_message_path_gives_the_in_process_record_with_shuffled_replies(extraction):
    """Weights (parameter digest), widths and accuracies of the Medium smoke profile are identical
    on Flower's message path (replies in a random order) and in the in-process loop."""
    cfg = smoke(policy="hasa", extraction=extraction)
    flower = F.run(cfg, 0, backend="local", shuffle=7)
    assert flower["provenance"]["runtime"] == "flower"
    assert_same_record(flower, H.run(cfg, 0))


@pytest.mark.parametrize("cfg", [
    smoke(policy="reverse", participation=0.5, aggregation="selective", rounds=3),
    H.config("smoke", "shakespeare", policy="hasa", aggregation="selective", rounds=2),
    H.many_clients_config("smoke", "shakespeare", policy="hasa", rounds=2)],
    ids=["medium, partial participation", "shakespeare, 8 roles", "shakespeare, LEAF roles, 10 % per round"])
def test_flower_message_path_gives_the_in_process_record_on_each_federation(cfg):
    """Medium with partial participation and the selective protocol, and both Shakespeare federations
    (the paper-shaped one and LEAF's 455 roles, smoke profile): the same record on Flower's message
    path as in process."""
    assert_same_record(F.run(cfg, 1, backend="local", shuffle=3), H.run(cfg, 1))


def test_flower_server_refuses_a_score_that_needs_the_data():
    with pytest.raises(ValueError, match="score 'loss' needs the clients' training data"):
        F.run(smoke(policy="hasa", score="loss"), 0, backend="local")


def test_flower_records_are_cached_apart_from_in_process_ones(tmp_path):
    cfg = smoke(policy="uniform", rounds=1)
    rec = F.cached_run(cfg, 0, tmp_path, backend="local")
    assert HR.record_path(cfg, 0, tmp_path).is_file()
    assert F.cached_run(cfg, 0, tmp_path, backend="local") == rec


def _serve_from_node_files(cfg, seed, out, shuffle=5):
    """The server on Flower's message path, node k given partition file 6 - k (its partition id
    comes from the file) and the vocabulary file, and no data set."""
    nodes = [{"vocab-file": str(out / D.VOCAB_FILE), "partition-file": str(out / D.partition_file_name(6 - k))}
             for k in range(7)]
    with S.server_identity():
        return F.serve(F.LocalGrid(F.client_app.app, 7, shuffle, node_configs=nodes), cfg, seed, 7)


def test_flower_nodes_built_from_their_files_give_the_in_process_record(tmp_path, monkeypatch):
    cfg = smoke(policy="hasa", extraction="rolling", rounds=1)
    D.write_node_files(cfg, 0, tmp_path)
    ref = H.run(cfg, 0)
    monkeypatch.setattr(D, "_partition", lambda *a: pytest.fail("a node with files read the data set"))
    monkeypatch.setattr(H, "data_dir", lambda: pytest.fail("a node with files looked for the data set"))
    assert_same_record(_serve_from_node_files(cfg, 0, tmp_path), ref)


def test_flower_node_files_of_another_seed_fail_the_run_with_their_message(tmp_path):
    cfg = smoke(policy="uniform", rounds=1)
    D.write_node_files(cfg, 1, tmp_path)
    with pytest.raises(D.NodeFilesError, match=r"written for another run: seed 1 \(this run: 0\)"):
        _serve_from_node_files(cfg, 0, tmp_path)


def test_node_files_command_writes_the_files_of_a_flwr_run_config(tmp_path, capsys):
    """`python -m hasa_flower node-files` reads --run-config as `flwr run` does (over pyproject's
    [tool.flwr.app.config]); a num-clients the benchmark does not have is an error."""
    flower_main(["node-files", "--out", str(tmp_path), "--run-config", "seed=2 policy='hasa'"])
    assert "7 partition files" in capsys.readouterr().out
    shared = json.loads((tmp_path / D.VOCAB_FILE).read_text())
    assert shared["made_by"] == D.node_files_identity(H.config("smoke"), 2) and shared["num_clients"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([D.VOCAB_FILE, *map(D.partition_file_name, range(7))])
    with pytest.raises(SystemExit, match="num-clients=7, but this benchmark has 282 clients"):
        flower_main(["node-files", "--out", str(tmp_path / "days"), "--run-config", "partition='publication_day'"])


def test_flower_run_config_maps_to_a_run_config():
    cfg, seed, k, results = SA.run_config_to_cfg({"profile": "smoke", "benchmark": "medium", "seed": 3,
                                                  "num-clients": 7, "policy": "hasa", "participation": 0.5})
    assert (seed, k, results) == (3, 7, "")
    assert cfg == H.config("smoke", policy="hasa", participation=0.5)


def test_pyproject_declares_the_flower_app_and_the_pinned_extra():
    import tomllib
    meta = tomllib.loads((H.REPO / "pyproject.toml").read_text())
    app = meta["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "hasa_flower.server_app:app", "clientapp": "hasa_flower.client_app:app"}
    assert app["fab-include"] == ["/hasa_core.py", "/hasa_records.py", "/hasa_flower/*.py"]
    assert f"flwr[simulation]=={flwr.__version__}" in meta["project"]["optional-dependencies"]["flower"]
    assert "federations" not in meta["tool"]["flwr"], "flwr 1.42 rewrites pyproject.toml to migrate this section"


@pytest.mark.simulation
def test_flower_simulation_engine_gives_the_in_process_record():
    """The real Simulation Engine (Ray actors, one CPU each): 7 clients, 2 rounds. Leaves no Ray
    process behind: none of the processes this test process started (its descendants: Ray's GCS,
    raylet, workers) is alive; Ray processes of anyone else on the machine are not looked at."""
    import re

    import psutil

    cfg = smoke(policy="hasa", extraction="rolling")
    rec = F.run(cfg, 0, backend="ray")
    assert_same_record(rec, H.run(cfg, 0))
    assert len(rec["round_seconds"]) == cfg.rounds
    left = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline()) or p.name()
            if p.status() != psutil.STATUS_ZOMBIE and re.search(r"raylet|gcs_server|ray::|/ray/", cmd):
                left.append(f"{p.pid} {cmd}")
        except psutil.Error:  # ended meanwhile
            pass
    assert not left, f"Ray processes started by this test left running: {left}"



INTERRUPTED_CHILD = """
import faulthandler, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started in the background
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks if it hangs
import hasa_core as H, hasa_flower as F
results = Path(sys.argv[1])
F.cached_run(H.config("smoke", policy="uniform", rounds=1, emb_dim=8, hidden_dim=8), 0, results, backend="local")
print("finished", flush=True)
try:
    F.cached_run(H.config("smoke", policy="hasa", rounds=40), 0, results, backend="ray")
except KeyboardInterrupt:
    print("interrupted", time.time(), flush=True)  # control is back with the caller
    raise
"""


def _alive(procs):
    """The processes of ``procs`` (psutil.Process objects) still running, zombies excepted."""
    import psutil
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:  # ended meanwhile
            pass
    return left


@pytest.mark.simulation
def test_ctrl_c_during_a_ray_run_returns_within_10_s_and_leaves_no_ray_process(tmp_path):
    """A child process caches one (local) record, then starts a long Ray-backend federation; once
    Ray's workers run, its process group gets SIGINT, as Ctrl-C in a terminal does. Within 10 s
    the run must raise KeyboardInterrupt to its caller (control returned; measured in the child).
    Within 20 s the child must have exited (Python's own teardown of torch and Ray comes on top:
    2.5 s at load 5 on 2 cores) and no process it started may be left: its descendants, seen while
    it ran (Ray's temp dir is the child's own; nobody else's process is looked at). The finished
    record must be intact and the interrupted run must have left no record."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import psutil

    results, ray_tmp = tmp_path / "results", tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": os.pathsep.join(
        [str(H.REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = tmp_path / "stderr"
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_CHILD, str(results)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=log.open("w"), start_new_session=True)
    seen: dict[int, psutil.Process] = {}
    try:
        assert child.stdout.readline().strip() == "finished", log.read_text()
        end = time.monotonic() + 240
        while time.monotonic() < end and child.poll() is None:
            procs = psutil.Process(child.pid).children(recursive=True)
            seen.update((p.pid, p) for p in procs)
            if any("ray::" in " ".join(p.cmdline()) for p in procs if p.is_running()):
                break
            time.sleep(0.5)
        assert child.poll() is None, f"the child ended before Ray started: {log.read_text()}"
        time.sleep(1)
        seen.update((p.pid, p) for p in psutil.Process(child.pid).children(recursive=True))
        t0, sent = time.monotonic(), time.time()
        os.killpg(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            pytest.fail(f"the child did not exit within 20 s of Ctrl-C; its stderr:\n{log.read_text()[-6000:]}")
        while _alive(seen.values()) and time.monotonic() - t0 < 20:
            time.sleep(0.2)
        said = child.stdout.read().split()
        assert said[:1] == ["interrupted"], f"no KeyboardInterrupt reached the caller: {log.read_text()[-3000:]}"
        assert float(said[1]) - sent < 10, f"control came back {float(said[1]) - sent:.1f} s after Ctrl-C"
        assert not _alive(seen.values()), f"processes of the interrupted run still alive: {_alive(seen.values())}"
        err = log.read_text()
        assert child.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
        done = H.config("smoke", policy="uniform", rounds=1, emb_dim=8, hidden_dim=8)
        HR.read_record(HR.record_path(done, 0, results), done, 0, runtime="flower")  # intact, or raises
        assert not HR.record_path(H.config("smoke", policy="hasa", rounds=40), 0, results).exists()
        assert not list(results.rglob(".tmp-*"))
    finally:  # on failure, end what this test started, by pid: the child and its descendants
        if child.poll() is None:
            child.kill()
        for p in seen.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.simulation
def test_flwr_run_command_fails_on_an_invalid_run_config_and_ends_its_superlink(capfd):
    """`python -m hasa_flower flwr-run` on an invalid run config: `flwr run` itself exits 0, the
    command returns 1 and names the failure, and no process of its SuperLink's group (SuperLink,
    SuperExec, simulation process and their descendants, watched while it ran) is left."""
    import os
    import threading
    import time

    import psutil

    seen: dict[int, psutil.Process] = {}
    group: list[int] = []
    done = threading.Event()

    def watch():
        while not done.wait(0.5):
            with contextlib.suppress(psutil.Error, IndexError):
                seen.update((p.pid, p) for p in psutil.Process(group[0]).children(recursive=True))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = F.flwr_run("policy='nonsense' rounds=1", on_start=lambda pid: (group.append(pid), seen.update(
            {pid: psutil.Process(pid)})))
    finally:
        done.set()
        watcher.join()
    assert code == 1
    assert "unknown policy 'nonsense'" in capfd.readouterr().err
    with pytest.raises(ProcessLookupError):
        os.killpg(group[0], 0)  # no process left in the SuperLink's group
    time.sleep(0.5)
    assert not _alive(seen.values()), f"processes of its SuperLink left: {_alive(seen.values())}"


def test_failed_runs_reads_flwr_ls():
    ok = {"run-id": "1", "status": "finished:completed"}
    bad = {"run-id": "2", "status": "finished:failed", "status-details": "Simulation failed"}
    assert F.failed_runs(json.dumps({"runs": [ok]})) == []
    assert F.failed_runs(json.dumps({"runs": [ok, bad]})) == ["run 2 finished:failed Simulation failed"]
    assert F.failed_runs(json.dumps({"runs": []})) == ["no run was recorded"]
    assert F.failed_runs("not json")[0].startswith("`flwr ls` gave no run list")


class _FakeGrid:
    """A grid whose pull answers at most three of the asked messages, oldest first; it counts the
    messages pushed and not yet answered."""

    def __init__(self):
        self.unanswered, self.most, self.pushed = {}, 0, 0

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = mid = f"m{self.pushed}"
            self.pushed += 1
            self.unanswered[mid] = m
            ids.append(mid)
        self.most = max(self.most, len(self.unanswered))
        return ids

    def pull_messages(self, message_ids):
        ready = [mid for mid in self.unanswered if mid in set(message_ids)][:3]
        return [Message(RecordDict(), reply_to=self.unanswered.pop(mid)) for mid in ready]


@pytest.mark.parametrize("window, most", [(5, 5), (None, 23)])
def test_the_grid_keeps_at_most_window_messages_in_flight_and_returns_every_reply(window, most):
    import threading
    inner, stop = _FakeGrid(), threading.Event()
    grid = F.StoppableGrid(inner, stop, poll=0.0, window=window)
    with S.server_identity():  # messages read their run id from it
        sent = [Message(RecordDict(), dst_node_id=k + 1, message_type=MessageType.QUERY) for k in range(23)]
        replies = grid.send_and_receive(sent)
        assert inner.most == most and len(replies) == 23
        assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(f"m{i}" for i in range(23))
        assert set(grid.seconds) == {MessageType.QUERY}
        stop.set()
        with pytest.raises(F.Stopped):
            grid.send_and_receive(sent[:1])


def test_a_simulated_node_builds_only_the_clients_it_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("HASA_POOL_DIR", str(tmp_path))
    cfg = H.config("smoke", "digits", partition="dirichlet", num_clients=30)
    D._partition.cache_clear()
    task = D._client_task(cfg, 0, 7)
    assert D._client_task(cfg, 0, 7) is task and list(D._partition(cfg, 0)[1]) == [7]
    assert torch.equal(task.clients[0].train[0][0], H.load_task(cfg, 0).clients[7].train[0][0])
    with pytest.raises(ValueError, match="partition-id 30 is outside the 30 clients"):
        D._client_task(cfg, 0, 30)
    D._partition.cache_clear()


def test_simulated_nodes_share_the_digit_pools_and_draw_the_engines_partition(tmp_path, monkeypatch):
    """The pools are mapped read-only from one uncompressed copy per data file (no process holds
    its own), hold hasa_core.digit_pool's very arrays, and give hasa_core.partition's clients."""
    monkeypatch.setenv("HASA_POOL_DIR", str(tmp_path))
    pools = D.shared_digit_pools()
    assert len(list(tmp_path.glob("*.npy"))) == 3 * len(H.DIGIT_DOMAINS)
    for dom, (x, y, n_train) in pools.items():
        rx, ry, rn = H.digit_pool(dom)
        assert x.dtype == rx.dtype and y.dtype == ry.dtype and (x == rx).all() and (y == ry).all() and n_train == rn
        assert not x.flags.writeable and not x.flags.owndata  # mapped from the file, not a copy
    for cfg in (H.config("smoke", "digits"), H.config("smoke", "digits", partition="dirichlet", num_clients=40)):
        ours, engine = D.draw_partition(cfg, 1), H.partition(cfg, 1)
        assert ours.names == engine.names
        for k in (0, len(ours) // 2, len(ours) - 1):
            a, b = ours.client(k), engine.client(k)
            assert all(torch.equal(t, u) for p, q in ((a.train, b.train), (a.test, b.test))
                       for batch, other in zip(p, q) for t, u in zip(batch, other))
            assert (a.label_counts == b.label_counts).all() and (a.feature_counts == b.feature_counts).all()


def test_a_simulated_node_keeps_only_the_most_recent_clients_within_the_cache_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("HASA_POOL_DIR", str(tmp_path))
    cfg = H.config("smoke", "digits", partition="dirichlet", num_clients=30)
    D._partition.cache_clear()
    sizes = {k: D._nbytes(D._client_task(cfg, 0, k)) for k in range(6)}
    D._partition.cache_clear()
    monkeypatch.setattr(D, "CLIENT_CACHE_MIB", (sizes[3] + sizes[4] + sizes[5]) / 2 ** 20)
    for k in range(6):
        D._client_task(cfg, 0, k)
    assert list(D._partition(cfg, 0)[1]) == [3, 4, 5]
    D._client_task(cfg, 0, 3)  # served again: the most recent now
    assert list(D._partition(cfg, 0)[1]) == [4, 5, 3]
    monkeypatch.setattr(D, "CLIENT_CACHE_MIB", 0.0)
    D._client_task(cfg, 0, 0)
    assert list(D._partition(cfg, 0)[1]) == [0]  # the one just built, at least
    D._partition.cache_clear()
