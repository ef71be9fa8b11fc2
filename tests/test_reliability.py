"""Reliability, third pass (issue 33): a copy inside another repository, two reproductions at once,
node files edited unseen, and the rough edges of the record commands. One section per point of
the issue; each test failed before its fix. Tests that run make or .ci/run work in a temporary
folder (a scratch copy of the files under test) and never write into the repository."""
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import smoke

import hasa_core as H
import hasa_flower.dataset as D
import hasa_flower.server_app as SA
import hasa_records as HR
from hasa_flower.__main__ import main as flower_main
from hasa_results.outputs import publish

E = importlib.import_module("hasa_results.experiments")  # the package re-exports a function of this name

REPO = Path(__file__).resolve().parents[1]


def git(*args, cwd, **kw):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, **kw)


def session_of(pid):
    """The session id of a live process (field 6 of /proc/PID/stat), or None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def live_in_session(sid):
    """The live (not zombie) processes of session ``sid``."""
    out = subprocess.run(["ps", "-e", "-o", "pid=", "-o", "sid=", "-o", "stat="], capture_output=True, text=True).stdout
    return [int(p) for p, s, st in (line.split()[:3] for line in out.splitlines()) if int(s) == sid and
            not st.startswith("Z")]


# --------------------------------------------------------------------------- 1. make clean-runs


RECORDS = ["results/runs/medium-hasa-static-js-0123456789/seed0.json",
           "results/engine1/runs/medium-hasa-static-js-9876543210/seed0.json",
           "results/smoke/runs/medium-hasa-static-js-0123456789/seed0.json"]


def test_clean_runs_in_an_artifact_folder_inside_another_repository_removes_nothing(tmp_path):
    """The artifact unpacked as a plain folder (no .git of its own) inside someone else's
    repository: git answers for the outer repository and calls every record untracked.
    `make clean-runs` refuses with one message and every record stays."""
    outer = tmp_path / "outer"
    art = outer / "vendor" / "hasa"
    art.mkdir(parents=True)
    shutil.copy(REPO / "Makefile", art)
    shutil.copy(REPO / ".gitignore", art)
    for rel in RECORDS:
        (art / rel).parent.mkdir(parents=True, exist_ok=True)
        (art / rel).write_text("{}\n")
    (outer / "README").write_text("someone else's repository\n")
    assert git("init", "-q", cwd=outer).returncode == 0
    git("add", "README", cwd=outer, check=True)
    git("commit", "-qm", "theirs", cwd=outer, check=True)
    r = subprocess.run(["make", "-s", "clean-runs"], cwd=art, capture_output=True, text=True, timeout=60)
    for rel in RECORDS:
        assert (art / rel).is_file(), f"clean-runs deleted {rel}: {r.stdout + r.stderr}"
    assert r.returncode != 0
    assert "not the top level of a git checkout of the artifact" in r.stderr and str(outer) in r.stderr, r.stderr
    assert "nothing was removed" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(["make", "-s", "-C", str(art), "clean-runs"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)  # from elsewhere: the same
    assert r.returncode != 0 and all((art / rel).is_file() for rel in RECORDS)


def test_clean_runs_keeps_a_record_the_manifest_lists_even_if_git_does_not_track_it(tmp_path):
    """A checkout of the artifact itself, where a record of results/records.manifest is untracked
    (committed elsewhere, say, or not yet added): listed records are never removed; others go."""
    shutil.copy(REPO / "Makefile", tmp_path)
    listed, unlisted = RECORDS[0], "results/runs/medium-hasa-static-js-0123456789/seed1.json"
    for rel in (listed, unlisted):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    (tmp_path / "results" / "records.manifest").write_text(f"{'a' * 64}  {listed.removeprefix('results/')}\n")
    assert git("init", "-q", cwd=tmp_path).returncode == 0
    git("add", "Makefile", cwd=tmp_path, check=True)
    git("commit", "-qm", "make", cwd=tmp_path, check=True)
    r = subprocess.run(["make", "-s", "clean-runs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / listed).is_file() and not (tmp_path / unlisted).exists()


# --------------------------------------------------------------------------- 2. make reproduce, twice at once


def concurrency_notebook():
    """A notebook that saves t1, waits up to 8 s for the other run's notebook to start (a marker
    file), saves t2 and, with ``fail``, then fails. ``tag`` names the run in every output."""
    import nbformat

    cells = [nbformat.v4.new_code_cell('profile = "smoke"\nn_jobs = 2\ntag = "A"\nfail = False',
                                       metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell(
                 "import pathlib, time\nimport pandas as pd\nimport hasa_results as R\n"
                 "results_dir, figures_dir = R.output_dirs(profile)\n"
                 "R.save_table(pd.DataFrame({'run': [tag]}), 't1', results_dir)\n"
                 "marker = pathlib.Path('..') / 'b-started'\n"
                 "if tag == 'A':\n"
                 "    for _ in range(80):\n"
                 "        if marker.exists():\n"
                 "            break\n"
                 "        time.sleep(0.1)\n"
                 "else:\n"
                 "    marker.write_text(tag)\n"
                 "R.save_table(pd.DataFrame({'run': [tag]}), 't2', results_dir)\n"
                 "print('this is run', tag)"),
             nbformat.v4.new_code_cell("if fail:\n    raise RuntimeError('run ' + tag + ' fails')")]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


def test_two_reproductions_at_once_never_report_success_with_outputs_not_their_own(tmp_path):
    """Run A (succeeds) and, once A has staged its first table, run B of the same profile (fails).
    Without a lock B emptied A's staging folder and A published a mix. Now B says it waits, runs
    after A, and fails alone: A exits 0 with t1, t2 and its executed notebook all its own, B
    exits non-zero and publishes nothing, and no staging folder is left."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for rel in ("Makefile", "hasa_core.py", "hasa_records.py"):
        shutil.copy(REPO / rel, repo / rel)
    shutil.copytree(REPO / "hasa_results", repo / "hasa_results", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "notebooks" / "01_x.ipynb").write_text(concurrency_notebook())
    results = repo / "results" / "smoke"
    (results / "notebooks").mkdir(parents=True)
    for name in ("t1.csv", "t2.csv"):
        (results / name).write_text("run\nold\n")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("HASA_STAGE", None)

    def reproduce(tag, fail):
        return subprocess.Popen(["make", "-o", "precompute", "reproduce", "PROFILE=smoke", f"PY={sys.executable}",
                                 "NOTEBOOKS=notebooks/01_x.ipynb", f"NB_PARAMS=-p tag {tag} -p fail {fail}"],
                                cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    a = reproduce("A", "False")
    try:
        staged = repo / "results" / ".stage-smoke-01_x" / "results" / "smoke" / "t1.csv"
        end = time.monotonic() + 240
        while not staged.exists() and a.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        b = reproduce("B", "True")
        out_a, out_b = a.communicate(timeout=300)[0], b.communicate(timeout=300)[0]
    finally:
        for p in (a, locals().get("b")):
            if p is not None and p.poll() is None:
                p.kill()
    assert b.returncode != 0, out_b
    assert "another make reproduce of profile smoke is running" in out_b and "waiting" in out_b, out_b
    assert a.returncode == 0, out_a
    assert {name: (results / name).read_text() for name in ("t1.csv", "t2.csv")} == \
        {"t1.csv": ",run\n0,A\n", "t2.csv": ",run\n0,A\n"}, (out_a, out_b)
    executed = (results / "notebooks" / "01_x.ipynb").read_text()
    assert "this is run A" in executed and "run B" not in executed
    assert not list(repo.glob("results/.stage-*"))


# --------------------------------------------------------------------------- 3. node files


@pytest.fixture(scope="module")
def node_files(tmp_path_factory):
    """The node files of the two-round smoke config (40 titles per client), seed 0."""
    out = tmp_path_factory.mktemp("nodes")
    D.write_node_files(smoke(), 0, out)
    return smoke(), out


def copy_files(src, dst):
    shutil.copytree(src, dst)
    return dst


def load_partition(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    return json.loads(str(arrays.pop("header"))), arrays


def save_partition(path, header, arrays, reseal):
    if reseal:  # by someone who knows how the digest is made
        header = {**header, "digest": D.arrays_digest(header, arrays)}
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array(json.dumps(header)), **arrays)
    path.write_bytes(buf.getvalue())


def edit_vocab(path, change, reseal):
    d = json.loads(path.read_text())
    change(d)
    if reseal:
        d["digest"] = D.vocab_digest(d["made_by"], d["vocab"], d["num_clients"])
    path.write_text(json.dumps(d))


def swap_words(d):
    d["vocab"][10], d["vocab"][11] = d["vocab"][11], d["vocab"][10]


def replace_a_token(h, a):
    a["train_tokens"] = a["train_tokens"].copy()
    a["train_tokens"][3] = "zebra"


def lengths_off_by_one(h, a):
    a["train_lengths"] = a["train_lengths"].copy()
    a["train_lengths"][0] += 1


def swap_titles_lengths(h, a):
    lengths = a["train_lengths"].copy()
    i = int(np.argmax(lengths != lengths[0]))
    lengths[0], lengths[i] = lengths[i], lengths[0]
    a["train_lengths"] = lengths


@pytest.mark.parametrize("edit, reseal, file, message", [
    ("vocab: words swapped", False, "vocab.json", "does not match its own digest"),
    ("vocab: num_clients changed", False, "vocab.json", "does not match its own digest"),
    ("partition: a token replaced", False, "partition-2.npz", "does not match its own digest"),
    ("partition: title lengths moved", False, "partition-2.npz", "does not match its own digest"),
    ("partition: title lengths off by one", True, "partition-2.npz", r"inconsistent: train_lengths add up to \d+"),
    ("partition: id beyond its clients", True, "partition-2.npz", "partition_id 9 is not one of its num_clients 7"),
    ("partition: num_clients changed", True, "partition-2.npz", "was written for 8 clients, .*vocab.json says 7"),
    ("vocab: num_clients changed", True, "partition-2.npz", "was written for 7 clients, .*vocab.json says 8"),
    ("vocab: words swapped", True, "partition-2.npz", "was written with another vocabulary file"),
    ("partition: truncated", False, "partition-2.npz", "is not a readable partition file"),
    ("vocab: truncated", False, "vocab.json", "is not a readable vocabulary file"),
])
def test_an_edited_node_file_is_refused_with_its_name(node_files, tmp_path, edit, reseal, file, message):
    """Edits that keep the made_by header: caught by the file's digest; re-sealed by someone who
    knows the rule: caught by the consistency checks (lengths against tokens, the partition id
    against the client count, the client count and the vocabulary against the vocabulary file)."""
    cfg, src = node_files
    out = copy_files(src, tmp_path / "nodes")
    vocab, part = out / D.VOCAB_FILE, out / D.partition_file_name(2)
    edits = {
        "vocab: words swapped": lambda: edit_vocab(vocab, swap_words, reseal),
        "vocab: num_clients changed": lambda: edit_vocab(vocab, lambda d: d.update(num_clients=8), reseal),
        "partition: a token replaced": lambda: save_partition(*edited(part, replace_a_token), reseal),
        "partition: title lengths moved": lambda: save_partition(*edited(part, swap_titles_lengths), reseal),
        "partition: title lengths off by one": lambda: save_partition(*edited(part, lengths_off_by_one), reseal),
        "partition: id beyond its clients": lambda: save_partition(
            *edited(part, lambda h, a: h.update(partition_id=9)), reseal),
        "partition: num_clients changed": lambda: save_partition(
            *edited(part, lambda h, a: h.update(num_clients=8)), reseal),
        "partition: truncated": lambda: part.write_bytes(part.read_bytes()[:200]),
        "vocab: truncated": lambda: vocab.write_text(vocab.read_text()[:50]),
    }
    edits[edit]()
    with pytest.raises(D.NodeFilesError, match=rf"{out / file}.*{message}"):
        D.node_task(cfg, 0, vocab, part)


def edited(path, change):
    header, arrays = load_partition(path)
    change(header, arrays)
    return path, header, arrays


def test_unedited_node_files_still_serve_their_node(node_files):
    cfg, out = node_files
    k, task = D.node_task(cfg, 0, out / D.VOCAB_FILE, out / D.partition_file_name(2))
    assert k == 2 and len(task.clients) == 1
    assert D.NODE_FILES_FORMAT >= 2  # the layout changed: files of format 1 are refused as another run's


# --------------------------------------------------------------------------- 4. .ci/run killed


def test_ci_run_killed_with_sigkill_leaves_no_test_process(tmp_path):
    """A CI runner kills .ci/run's process group with SIGKILL (no trap runs): the tests' session,
    which setsid moved out of that group (make, a process that left its group as Ray's driver
    does, a plain background one), is ended by its watchdog, and the run's temporary folder goes."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "Makefile").write_text(
        "test:\n"
        "\techo \"$$RAY_TMPDIR\" > raytmp.txt\n"
        "\tsleep 300 >/dev/null 2>&1 & echo $$! > leaked.pid\n"
        f"\t{sys.executable} -c 'import os, subprocess; os.setpgrp(); "
        "p = subprocess.Popen([\"sleep\", \"300\"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "open(\"regrouped.pid\", \"w\").write(str(p.pid))'\n"
        "\tsleep 300\n")
    ci = subprocess.Popen(["bash", str(repo / ".ci" / "run")], start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sid = None
    try:
        end = time.monotonic() + 60
        while not all((repo / f).is_file() and (repo / f).read_text().strip()
                      for f in ("leaked.pid", "regrouped.pid", "raytmp.txt")):
            assert time.monotonic() < end and ci.poll() is None, "the stand-in make test did not start"
            time.sleep(0.2)
        leaked = [int((repo / f).read_text()) for f in ("leaked.pid", "regrouped.pid")]
        sid = session_of(leaked[0])
        assert sid and sid != os.getsid(0) and session_of(leaked[1]) == sid
        os.killpg(ci.pid, signal.SIGKILL)  # what a CI runner's timeout does
        ci.wait(timeout=10)
        end = time.monotonic() + 30
        while live_in_session(sid) and time.monotonic() < end:
            time.sleep(0.5)
        assert live_in_session(sid) == [], "the tests' session outlived .ci/run"
        assert not Path((repo / "raytmp.txt").read_text().strip()).exists()
    finally:
        if ci.poll() is None:
            os.killpg(ci.pid, signal.SIGKILL)
            ci.wait()
        for pid in live_in_session(sid) if sid else []:  # only what this test started
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- 5, 6. audit and manifest --check


def fake_results(root):
    """A results folder with two sealed stand-in records and their manifest."""
    paths = [root / "runs" / "medium-hasa-static-js-0123456789" / f"seed{s}.json" for s in (0, 1)]
    for s, p in enumerate(paths):
        HR.write_json_atomic(p, HR.sealed({"seed": s, "provenance": {"engine": 0}}))
    HR.write_manifest(root)
    return paths


@pytest.mark.parametrize("sample", ["-1", "0", "two"])
def test_audit_refuses_a_sample_below_one_with_one_message(sample, capsys):
    with pytest.raises(SystemExit) as e:
        HR._main(["audit", "--sample", sample, "--cheapest"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sample: must be an integer >= 1" in err and f"got '{sample}'" in err, err
    with pytest.raises(ValueError, match="sample .* must be an integer >= 1"):
        HR.audit(sample=int(sample) if sample != "two" else 0)


def test_audit_names_a_listed_record_that_is_missing(tmp_path, monkeypatch, capsys):
    paths = fake_results(tmp_path)
    paths[1].unlink()
    monkeypatch.setattr(HR, "DEFAULT_RESULTS_DIR", tmp_path)
    with pytest.raises(SystemExit, match=r"audit: .*runs/medium-hasa-static-js-0123456789/seed1\.json: listed, but "
                                         "missing") as e:
        HR._main(["audit"])
    assert "Traceback" not in str(e.value)


def test_manifest_check_names_every_bad_file_and_reports_every_problem(tmp_path, monkeypatch, capsys):
    """A malformed line, a `../` entry, a path that is no record's, a truncated record and a
    missing one: each named, all reported in one run, then a non-zero exit without a traceback."""
    paths = fake_results(tmp_path)
    paths[0].write_text(paths[0].read_text()[:20])  # truncated
    manifest = tmp_path / HR.MANIFEST
    manifest.write_text(manifest.read_text() + "not a manifest line\n"
                        + f"{'b' * 64}  ../../etc/passwd\n" + f"{'c' * 64}  notes/seed0.json\n"
                        + f"{'d' * 64}  runs/medium-hasa-static-js-0123456789/seed7.json\n")
    problems = HR.manifest_problems(tmp_path)
    expected = [f"{HR.MANIFEST} line 3: not '<sha256>  <record path>'", f"{HR.MANIFEST} line 4: '../../etc/passwd' "
                "leaves the results folder", f"{HR.MANIFEST} line 5: 'notes/seed0.json' is not a record path",
                "runs/medium-hasa-static-js-0123456789/seed0.json: not a readable JSON record",
                "runs/medium-hasa-static-js-0123456789/seed7.json: listed, but missing"]
    assert len(problems) == len(expected) and all(p.startswith(e) for p, e in zip(problems, expected)), problems
    monkeypatch.setattr(HR, "DEFAULT_RESULTS_DIR", tmp_path)
    monkeypatch.setattr(HR, "_tracked_records", lambda: None)
    with pytest.raises(SystemExit, match="5 record"):
        HR._main(["manifest", "--check"])
    printed = capsys.readouterr().out
    assert all(f"MANIFEST: {p}" in printed for p in problems)
    with pytest.raises(SystemExit, match=r"manifest: 1 record file\(s\) cannot be read, .*seed0\.json: not a "
                                         "readable JSON record"):
        HR._main(["manifest"])  # and writing it refuses a truncated record, naming it


# --------------------------------------------------------------------------- 7. integers in run configs


@pytest.mark.parametrize("changes, message", [
    ({"seed": 1.5}, r"seed must be an integer >= 0; got 1\.5"),
    ({"seed": 1.0}, r"seed must be an integer >= 0; got 1\.0"),
    ({"seed": True}, "seed must be an integer >= 0; got True"),
    ({"seed": "1"}, "seed must be an integer >= 0; got '1'"),
    ({"num-clients": 7.5}, r"num-clients must be an integer >= 1; got 7\.5"),
    ({"rounds": 2.5}, r"rounds must be an integer \(not a bool or a float\); got 2\.5"),
    ({"rounds": 0.0}, r"rounds must be an integer"),  # 0 (the integer) keeps the profile's
    ({"eval-every": False}, "eval_every must be an integer"),
    ({"max-examples-per-client": 40.0}, "max_examples_per_client must be None or an integer"),
])
def test_a_run_config_refuses_a_non_integer_where_an_integer_belongs(changes, message):
    rc = {"profile": "smoke", "benchmark": "medium", "seed": 3, "num-clients": 7, **changes}
    with pytest.raises(ValueError, match=message):
        SA.run_config_to_cfg(rc)


def test_node_files_command_writes_nothing_for_a_bad_run_config(tmp_path):
    with pytest.raises(SystemExit, match=r"seed must be an integer >= 0; got 1\.5"):
        flower_main(["node-files", "--out", str(tmp_path / "a"), "--run-config", "seed=1.5"])
    with pytest.raises(SystemExit, match="num-clients=6, but this benchmark has 7 clients.*nothing was written"):
        flower_main(["node-files", "--out", str(tmp_path / "b"), "--run-config", "num-clients=6"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- 8. budget fields of a record


@pytest.fixture(scope="module")
def records(tiny_cfg):
    """Sealed records of the published rule (static slices), of FjORD (expected widths), of FjORD
    with self-distillation (its widest slice counted as well) and of the level rule (FLOP budget),
    each from the tiny config."""
    return {name: HR.sealed(H.run(tiny_cfg.replace(**changes), 0)) for name, changes in [
        ("hasa", {"policy": "hasa"}), ("fjord", {"policy": "hasa", "extraction": "ordered"}),
        ("fjord_kd", {"extraction": "ordered", "distill": True}), ("levels", {"policy": "hasa_levels"})]}


def _halve_the_widest(r):
    k = int(np.argmax(r["widths"]))
    r["widths"][k] = r["widths"][k] / 2


def _double_the_widest_size(r):
    k = int(np.argmax(r["widths"]))
    r["sizes"][k] = 2 * r["sizes"][k]


@pytest.mark.parametrize("which, edit, message", [
    ("hasa", _halve_the_widest, "budget_used = .*, its widths and sizes give"),
    ("hasa", _double_the_widest_size, "budget_used = .*, its widths and sizes give"),
    ("fjord", _halve_the_widest, "budget_used = .*, its widths and sizes give"),
    ("fjord_kd", lambda r: r["widths"].__setitem__(0, 1.0), "budget_used = .*, its widths and sizes give"),
    ("hasa", lambda r: r.update(budget=0.6, budget_frac=r["budget_used"] / 0.6),
     r"budget = 0\.6, its config's B is 0\.5"),
    ("hasa", lambda r: r.update(budget_frac=1.0), r"budget_frac = 1\.0, its budget_used / budget gives"),
    ("levels", lambda r: r.update(budget_frac=r["budget_frac"] * 0.5), "budget_frac = .*, its budget_used / budget"),
    ("levels", lambda r: r.update(budget_used=r["budget"] * 1.1, budget_frac=1.1), "exceeds the FLOP budget"),
    ("hasa", lambda r: r["widths"].__setitem__(1, 1.5), r"widths holds a value that is not a number in \(0, 1\]"),
    ("hasa", lambda r: r["widths"].__setitem__(1, 0.0), r"widths holds a value that is not a number in \(0, 1\]"),
    ("hasa", lambda r: r["sizes"].__setitem__(1, -3), "sizes holds a value that is not a positive integer"),
    ("hasa", lambda r: r["sizes"].__setitem__(1, 2.5), "sizes holds a value that is not a positive integer"),
    ("hasa", lambda r: r.update(budget_kind="flops"), "budget_kind = 'flops', but policy 'hasa' spends the linear"),
    ("hasa", lambda r: r.update(budget="half"), "budget is not a finite number"),
])
def test_a_resealed_edit_of_widths_sizes_or_budget_is_refused(records, tiny_cfg, tmp_path, which, edit, message):
    rec = json.loads(json.dumps(records[which]))
    assert HR.consistency_problems(rec) == []
    edit(rec)
    cfg = H.RunConfig.from_dict(rec["config"])
    path = HR.record_path(cfg, 0, tmp_path)
    HR.write_json_atomic(path, HR.sealed(rec))  # re-sealed: the digest matches
    with pytest.raises(HR.BadRecord, match=f"{path.name} is inconsistent: .*{message}"):
        HR.read_record(path, cfg, 0)


def test_every_committed_record_the_cache_serves_passes_the_budget_checks():
    """Every committed record of this engine under its config's current key (FjORD's included:
    its budget counts the current component's expected widths)."""
    bad = {}
    for path in HR.record_files():
        rec = json.loads(path.read_text(encoding="utf-8"))
        if HR._engine_of(rec) == H.ENGINE_VERSION and path.parent.name == H.RunConfig.from_dict(rec["config"]).key():
            bad.update({str(path): problems for problems in [HR.consistency_problems(rec)] if problems})
    assert bad == {}


# --------------------------------------------------------------------------- 9. alpha's range (hasa_core)


@pytest.mark.xfail(not hasattr(H, "ALPHA_MAX"), strict=True,
                   reason="issue 33 point 9: enabled by hasa_core.ALPHA_MAX and its check in RunConfig.__post_init__")
def test_alpha_has_a_range_that_keeps_the_score_meaningful():
    """alpha = 1e300 is finite, but swamps the counts: every smoothed distribution is the same,
    every score equal, and hasa silently becomes uniform. It is refused with one message; the
    largest alpha accepted and every alpha an experiment uses are accepted."""
    for alpha in (1e300, H.ALPHA_MAX * 10):
        with pytest.raises(ValueError, match=r"alpha \(Eq\. 11 smoothing\) must be in \[0, "):
            H.config("smoke", policy="hasa", alpha=alpha)
    assert H.config("smoke", alpha=H.ALPHA_MAX).alpha == H.ALPHA_MAX
    used = {c.alpha for profile in ("paper", "smoke") for methods, _ in E.experiments(profile).values()
            for c in methods.values()}
    assert used and max(used) <= H.ALPHA_MAX


# --------------------------------------------------------------------------- 10. make venv and the lock


def venv_repo(tmp_path):
    """A scratch copy of the files `make venv` reads, and a PATH whose python3 logs every call: it
    stands in for `python3 -m venv` (making a .venv whose python logs and succeeds) and runs this
    interpreter otherwise (the lock check's digest)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for rel in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / rel, repo / rel)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "log"
    fake = bin_ / "venv-python"
    fake.write_text(f'#!/bin/sh\necho "venv-python $*" >> {log}\n')
    (bin_ / "python3").write_text(
        f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then echo "python3 $*" >> {log}; '
        f'mkdir -p .venv/bin && cp {fake} .venv/bin/python; exit 0; fi\nexec {sys.executable} "$@"\n')
    for f in (fake, bin_ / "python3"):
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}

    def make_venv():
        r = subprocess.run(["make", "venv"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return r, calls
    return repo, make_venv


def test_make_venv_refuses_a_lock_that_does_not_match_pyproject(tmp_path):
    repo, make_venv = venv_repo(tmp_path)
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy==2.4.6"', '"numpy==2.4.5"'))
    r, calls = make_venv()
    assert r.returncode != 0 and calls == [], r.stdout + r.stderr
    assert "requirements.lock does not match pyproject.toml" in r.stderr and "make lock" in r.stderr
    assert "nothing was installed" in r.stderr and not (repo / ".venv").exists()


def test_make_venv_rebuilds_a_venv_whose_lock_changed(tmp_path):
    """A fresh venv and one built from another lock are emptied first (venv --clear), so no
    package of the old lock stays; when only pyproject.toml changed, the venv is kept."""
    repo, make_venv = venv_repo(tmp_path)
    r, calls = make_venv()
    assert r.returncode == 0, r.stdout + r.stderr
    assert calls[0] == "python3 -m venv --clear .venv" and any("--require-hashes" in c for c in calls)
    assert (repo / ".venv" / "requirements.lock").read_text() == (repo / "requirements.lock").read_text()
    later = time.time() + 5
    os.utime(repo / "pyproject.toml", (later, later))
    r, calls = make_venv()
    assert r.returncode == 0 and calls[0] == "python3 -m venv .venv", calls
    lock = repo / "requirements.lock"
    lock.write_text(lock.read_text().replace("numpy==2.4.6", "numpy==2.4.6 ", 1))  # another lock, same digest line
    os.utime(lock, (later + 5, later + 5))
    r, calls = make_venv()
    assert r.returncode == 0 and calls[0] == "python3 -m venv --clear .venv", calls


# --------------------------------------------------------------------------- 11. publish, all or nothing


def stage_with(tmp_path, names):
    root = tmp_path / "repo"
    stage = root / "results" / ".stage-smoke-01_x"
    for name in names:
        (stage / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / "results" / name).write_text(f"new {name}\n")
    (root / "results" / "a.csv").write_text("old a.csv\n")
    return root, stage


def test_publish_refuses_before_moving_anything_when_a_folder_is_where_a_table_belongs(tmp_path):
    root, stage = stage_with(tmp_path, ["a.csv", "b.csv", "c.csv", "sub/d.csv"])
    (root / "results" / "b.csv").mkdir()
    (root / "results" / "sub").write_text("a file where a folder belongs\n")
    with pytest.raises(ValueError, match=r"b\.csv is a folder; .*sub is not a folder; .*nothing was published"):
        publish(stage, root)
    assert (root / "results" / "a.csv").read_text() == "old a.csv\n"
    assert not (root / "results" / "c.csv").exists()
    assert sorted(p.name for p in stage.rglob("*.csv")) == ["a.csv", "b.csv", "c.csv", "d.csv"]


def test_publish_puts_everything_back_when_a_rename_fails_part_way(tmp_path, monkeypatch):
    root, stage = stage_with(tmp_path, ["a.csv", "b.csv", "c.csv"])
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space left"):
        publish(stage, root)
    monkeypatch.setattr(os, "replace", real)
    assert (root / "results" / "a.csv").read_text() == "old a.csv\n"
    assert sorted(p.name for p in (root / "results").iterdir() if p.is_file()) == ["a.csv"]
    assert sorted(p.name for p in stage.rglob("*") if p.is_file()) == ["a.csv", "b.csv", "c.csv"]
    assert [p.read_text() for p in sorted(stage.rglob("*.csv"))] == ["new a.csv\n", "new b.csv\n", "new c.csv\n"]
    assert [p.name for p in publish(stage, root)] == ["a.csv", "b.csv", "c.csv"]
    assert (root / "results" / "a.csv").read_text() == "new a.csv\n" and not stage.exists()


# --------------------------------------------------------------------------- 12. counts under concurrency


@pytest.fixture
def made_by_another_process(tiny_cfg, tmp_path, monkeypatch):
    """The record of (tiny_cfg, seed 0) in a cache in tmp_path, made "by another process" after
    this one looked: the first look of each module finds nothing; training here fails the test."""
    HR.cached_run(tiny_cfg, 0, tmp_path)
    for module in (HR, E):
        real, looked = module.cached_record, []

        def first_look_misses(*a, real=real, looked=looked, **k):
            looked.append(1)
            return None if len(looked) == 1 else real(*a, **k)
        monkeypatch.setattr(module, "cached_record", first_look_misses)
    monkeypatch.setattr(HR, "run", lambda *a, **k: pytest.fail("trained a record another process made"))
    return tmp_path


def test_run_many_says_what_another_process_made_meanwhile(tiny_cfg, made_by_another_process, capsys):
    tally = {}
    recs = HR.run_many(tiny_cfg, [0], 1, made_by_another_process, desc="t", tally=tally)
    assert len(recs) == 1 and tally == {"reused": 0, "computed": 0, "made elsewhere": 1}
    out = capsys.readouterr().out
    assert "0 of 1 records reused from the cache, 1 to compute" in out
    assert "t: 0 of 1 computed by this process, 1 made meanwhile by another process" in out


def test_precompute_says_what_this_process_computed(tiny_cfg, made_by_another_process, monkeypatch, capsys):
    monkeypatch.setattr(E, "experiments", lambda profile, results_dir=None: {"x": ({"m": tiny_cfg}, [0])})
    assert E.precompute("smoke", 1, made_by_another_process) == 1
    out = capsys.readouterr().out
    assert "done; 0 records reused, 0 computed by this process, 1 made meanwhile by another process" in out, out
