"""Record integrity: the digest and consistency checks on read, runtime provenance, the claim that
keeps concurrent processes from computing one record twice, migration, the manifest, the audit."""
import json
import math
import re
import subprocess
import sys

import pytest
from helpers import smoke

import hasa_core as H
import hasa_records as HR


@pytest.fixture(scope="module")
def record(tiny_cfg):
    return HR.sealed(H.run(tiny_cfg, 0, sweep=True))


def _edits():
    def shift(r):  # every accuracy +5 pp, summaries and curve kept consistent
        r["accuracy"] = [a + 0.05 for a in r["accuracy"]]
        r.update(H.summarize_accuracies(r["accuracy"]))
        r["curve"][-1].update(accuracy=r["accuracy"], **H.summarize_accuracies(r["accuracy"]))
    return {
        "+5 pp everywhere": (shift, None),
        "a NaN accuracy": (lambda r: r["accuracy"].__setitem__(0, math.nan), "not a number in"),
        "curve disagrees with mean": (lambda r: r["curve"][-1].update(mean=0.5), "mean = 0.5"),
        "a client short": (lambda r: r["clients"].pop(), "one entry per client"),
        "zeroed params_sha256": (lambda r: r.update(params_sha256="0" * 64), None),
        "a string accuracy": (lambda r: r["accuracy"].__setitem__(1, "0.1"), "not a number in"),
        "an empty curve": (lambda r: r.update(curve=[]), "curve is empty"),
    }


@pytest.mark.parametrize("edit", list(_edits()))
def test_an_edited_record_is_refused_by_its_digest_and_a_resealed_one_by_its_consistency(
        record, tiny_cfg, tmp_path, edit):
    change, inconsistency = _edits()[edit]
    path = HR.record_path(tiny_cfg, 0, tmp_path)
    edited = json.loads(json.dumps(record))
    change(edited)
    HR.write_json_atomic(path, edited)  # the old digest kept: caught by the digest
    with pytest.raises(HR.BadRecord, match=f"{path.name} does not match its own digest"):
        HR.read_record(path, tiny_cfg, 0)
    if inconsistency:  # re-sealed by someone who knows the rule: caught by the consistency check
        HR.write_json_atomic(path, HR.sealed(edited))
        with pytest.raises(HR.BadRecord, match=inconsistency):
            HR.read_record(path, tiny_cfg, 0)
    with pytest.warns(UserWarning, match="moved it"):
        again = HR.cached_run(tiny_cfg, 0, tmp_path)  # recomputed: the same numbers
    assert (again["params_sha256"], again["accuracy"]) == (record["params_sha256"], record["accuracy"])


def test_the_sealed_record_reads_back_and_its_extras_are_consistent(record, tiny_cfg, tmp_path):
    path = HR.record_path(tiny_cfg, 0, tmp_path)
    HR.write_json_atomic(path, record)
    assert HR.read_record(path, tiny_cfg, 0) == record
    assert HR.consistency_problems(record) == []
    assert len(record["accuracy_capped"]) == len(record["clients"])


def test_the_accuracy_sweep_at_a_clients_own_width_is_its_accuracy(record):
    sweep = record["accuracy_sweep"]
    assert sweep["grid"] == [k / 16 for k in range(1, 17)] and sweep["version"] == H.SWEEP_VERSION  # E = H = 16
    on_grid = [(k, sweep["grid"].index(w)) for k, w in enumerate(record["widths"]) if w in sweep["grid"]]
    assert on_grid, "the smoke config's uniform widths (B = 0.5) lie on the grid"
    assert not HR.has_extras({**record, "accuracy_sweep": {**sweep, "version": 1}}, H.EXTRAS + H.SWEEP)
    assert all(sweep["accuracy"][k][i] == record["accuracy"][k] for k, i in on_grid)
    assert [a[-1] for a in sweep["accuracy"]] == record["accuracy_full_model"]
    broken = HR.sealed({**record, "accuracy_sweep": {**sweep, "accuracy": sweep["accuracy"][:-1]}})
    assert "accuracy_sweep is not one accuracy per grid width" in " ".join(HR.consistency_problems(broken))


def test_the_flower_cache_serves_only_flower_records(record, tiny_cfg, tmp_path):
    path = HR.record_path(tiny_cfg, 0, tmp_path)
    HR.write_json_atomic(path, record)  # an in-process record copied into a Flower cache
    with pytest.raises(HR.BadRecord, match="in-process runtime, this cache holds flower records"):
        HR.read_record(path, tiny_cfg, 0, runtime="flower")
    flower = HR.sealed({**record, "provenance": {**record["provenance"], "runtime": "flower"}})
    HR.write_json_atomic(path, flower)
    with pytest.raises(HR.BadRecord, match="flower runtime"):
        HR.read_record(path, tiny_cfg, 0)
    assert HR.read_record(path, tiny_cfg, 0, runtime="flower") == flower


_CONCURRENT = """
import sys, time
sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
import hasa_core as H
import hasa_records as HR
from helpers import smoke
real = HR.run
def logged(cfg, seed):
    open({log!r}, "a").write("computed\\n")
    time.sleep(1.0)
    return real(cfg, seed)
HR.run = logged
HR.cached_run(smoke(rounds=1, max_examples_per_client=20, emb_dim=8, hidden_dim=8), 0, H.Path({out!r}))
"""


def test_concurrent_processes_compute_one_record_once(tmp_path):
    log = tmp_path / "log"
    code = _CONCURRENT.format(tests=str(H.REPO / "tests"), repo=str(H.REPO), log=str(log), out=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert log.read_text().count("computed") == 1


def test_migration_seals_without_changing_a_number_and_the_manifest_sees_edits(record, tiny_cfg, tmp_path):
    path = HR.record_path(tiny_cfg, 0, tmp_path)
    unsealed = {k: v for k, v in record.items() if k != "digest"}
    HR.write_json_atomic(path, unsealed)
    assert HR.migrate_records(tmp_path)["sealed"] == 1
    assert json.loads(path.read_text()) == record
    assert HR.migrate_records(tmp_path)["already sealed"] == 1
    HR.write_manifest(tmp_path)
    assert HR.manifest_problems(tmp_path) == []
    rel = str(path.relative_to(tmp_path))
    HR.write_json_atomic(path, {**record, "mean": 0.9})
    assert HR.manifest_problems(tmp_path) == [f"{rel}: its content does not match its digest (edited)"]
    HR.write_json_atomic(path, HR.sealed({**record, "mean": 0.9}))
    assert HR.manifest_problems(tmp_path) == [f"{rel}: its digest is not the one listed"]
    other = HR.record_path(tiny_cfg, 1, tmp_path)
    HR.write_json_atomic(other, record)
    path.unlink()
    assert HR.manifest_problems(tmp_path) == [f"{rel}: listed, but missing",
                                             f"{other.relative_to(tmp_path)}: a record not listed in "
                                             f"{HR.MANIFEST}"]
    assert HR.manifest_problems(tmp_path, tracked=[]) == [f"{rel}: listed, but missing"]  # untracked: not checked


def test_the_audit_reruns_only_records_this_code_serves_on_this_machine_class(record, tiny_cfg, tmp_path):
    """A record made here under its config's key is audited; one made on another processor (numbers
    equal to float32 rounding only) and one under a superseded key (a versioned change) are not."""
    here = HR.record_path(tiny_cfg, 0, tmp_path)
    HR.write_json_atomic(here, record)
    elsewhere = HR.record_path(tiny_cfg, 1, tmp_path)
    no_sweep = {k: v for k, v in record.items() if k != "accuracy_sweep"}
    other = f"a processor other than {H.cpu_model()}"  # whatever this machine is
    HR.write_json_atomic(elsewhere, HR.sealed({**no_sweep, "seed": 1,
                                               "provenance": {**record["provenance"], "cpu": other}}))
    superseded = tmp_path / "runs" / "medium-hasa-static-js-0123456789" / "seed0.json"
    HR.write_json_atomic(superseded, record)
    HR.write_manifest(tmp_path)
    assert [rel for rel, _ in HR.auditable(tmp_path)] == [str(here.relative_to(tmp_path))]
    refused = rf"made on {re.escape(other)} .* can be filled only on a machine of that class"
    with pytest.raises(HR.NotReproduced, match=refused):
        HR.fill_extras(tiny_cfg, 1, tmp_path, H.EXTRAS + H.SWEEP)


def test_the_committed_records_match_the_manifest():
    assert HR.manifest_problems(tracked=HR._tracked_records()) == []


def test_audit_reruns_a_record_and_sees_a_changed_parameter_digest(tmp_path):
    cfg = smoke(rounds=1, max_examples_per_client=20, emb_dim=8, hidden_dim=8)
    rec = HR.cached_run(cfg, 0, tmp_path)
    HR.write_manifest(tmp_path)
    assert [r["same"] for r in HR.audit(tmp_path, sample=1, cheapest=True)] == [True]
    HR.write_json_atomic(HR.record_path(cfg, 0, tmp_path), HR.sealed({**rec, "params_sha256": "f" * 64}))
    assert [r["same"] for r in HR.audit(tmp_path, sample=1)] == [False]


def test_fill_extras_reruns_an_older_record_and_checks_its_parameters(tiny_cfg, tmp_path, record):
    path = HR.record_path(tiny_cfg, 0, tmp_path)
    older = HR.sealed({k: v for k, v in record.items() if k not in H.EXTRAS})
    HR.write_json_atomic(path, older)
    filled = HR.fill_extras(tiny_cfg, 0, tmp_path)
    assert {k: filled[k] for k in H.EXTRAS} == {k: record[k] for k in H.EXTRAS}
    assert {k: v for k, v in filled.items() if k not in (*H.EXTRAS, "digest", "seconds")} == \
        {k: v for k, v in older.items() if k not in ("digest", "seconds")}
    HR.write_json_atomic(path, HR.sealed({**older, "params_sha256": "a" * 64}))
    with pytest.raises(HR.NotReproduced, match="does not reproduce it"):
        HR.fill_extras(tiny_cfg, 0, tmp_path)


def test_a_record_with_the_extras_but_no_sweep_stays_valid_until_the_sweep_is_asked_for(tiny_cfg, tmp_path, record):
    no_sweep = HR.sealed({k: v for k, v in record.items() if k not in H.SWEEP})
    HR.write_json_atomic(HR.record_path(tiny_cfg, 0, tmp_path), no_sweep)
    assert HR.has_extras(no_sweep) and not HR.has_extras(no_sweep, H.EXTRAS + H.SWEEP)
    assert HR.run_many(tiny_cfg, [0], 1, tmp_path, progress=False, extras=H.EXTRAS) == [no_sweep]  # not re-run
    filled = HR.run_many(tiny_cfg, [0], 1, tmp_path, progress=False, extras=H.EXTRAS + H.SWEEP)[0]
    assert "accuracy_sweep" not in H.run(tiny_cfg, 0)  # only where asked for
    assert filled["accuracy_sweep"] == record["accuracy_sweep"]
    assert {k: v for k, v in filled.items() if k not in ("accuracy_sweep", "digest")} == \
        {k: v for k, v in no_sweep.items() if k != "digest"}


def test_a_new_record_with_the_sweep_is_trained_once(tiny_cfg, tmp_path, record, monkeypatch):
    calls = []
    real = H.run
    monkeypatch.setattr(HR, "run", lambda *a, **k: calls.append(k) or real(*a, **k))
    made = HR.fill_extras(tiny_cfg, 0, tmp_path, H.EXTRAS + H.SWEEP)
    assert calls == [{"sweep": True}] and made["accuracy_sweep"] == record["accuracy_sweep"]
