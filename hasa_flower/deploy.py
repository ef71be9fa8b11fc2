"""Deploying the HASA Flower app: ``flwr run`` on a SuperLink of its own that says when the run
failed, and each SuperNode's files for a run.

Imports: flwr's CLI and config readers, :mod:`hasa_core`, :mod:`hasa_flower.dataset`,
:mod:`hasa_flower.server_app`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import hasa_core as H
from hasa_flower.dataset import write_node_files
from hasa_flower.server_app import run_config_to_cfg


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


def write_run_node_files(out: Path, run_config: str = "", app_dir: Path | None = None) -> list[Path]:
    """Each SuperNode's files (:func:`hasa_flower.dataset.write_node_files`) for the run that ``flwr run
    <app_dir> --run-config <run_config>`` starts: the app's ``[tool.flwr.app.config]`` (``app_dir``
    default: this repository) with the overrides in ``run_config``, read as ``flwr run`` reads them.
    Returns the paths written, the vocabulary file first; raises ValueError, writing nothing, when
    the run config is invalid (:func:`hasa_flower.server_app.run_config_to_cfg`) or its
    ``num-clients`` is not the benchmark's number of clients."""
    from flwr.common.config import get_fused_config_from_dir, parse_config_args
    cfg, seed, k, _ = run_config_to_cfg(get_fused_config_from_dir(app_dir or H.REPO, parse_config_args([run_config])))
    return write_node_files(cfg, seed, out, num_clients=k)
