"""The Flower app: the same records as the in-process engine. The fast tests use Flower's message
path in this process (:class:`hasa_flower.LocalGrid`, no Ray); the one test marked ``simulation`` runs Flower's
Simulation Engine (Ray) and is deselected with ``-m "not simulation"``."""

import pytest
from helpers import smoke

import hasa_core as H

flwr = pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")
import hasa_flower as F  # noqa: E402

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


def test_flower_message_path_with_partial_participation_and_selective_protocol():
    cfg = smoke(policy="reverse", participation=0.5, aggregation="selective", rounds=3)
    assert_same_record(F.run(cfg, 1, backend="local", shuffle=3), H.run(cfg, 1))


def test_flower_server_refuses_a_score_that_needs_the_data():
    with pytest.raises(ValueError, match="score 'loss' needs the clients' training data"):
        F.run(smoke(policy="hasa", score="loss"), 0, backend="local")


def test_flower_records_are_cached_apart_from_in_process_ones(tmp_path):
    cfg = smoke(policy="uniform", rounds=1)
    rec = F.cached_run(cfg, 0, tmp_path, backend="local")
    assert H.record_path(cfg, 0, tmp_path).is_file()
    assert F.cached_run(cfg, 0, tmp_path, backend="local") == rec


def test_flower_run_config_maps_to_a_run_config():
    cfg, seed, k, results = F._run_config_to_cfg({"profile": "smoke", "benchmark": "medium", "seed": 3,
                                                  "num-clients": 7, "policy": "hasa", "participation": 0.5})
    assert (seed, k, results) == (3, 7, "")
    assert cfg == H.config("smoke", policy="hasa", participation=0.5)


def test_pyproject_declares_the_flower_app_and_the_pinned_extra():
    import tomllib
    meta = tomllib.loads((H.REPO / "pyproject.toml").read_text())
    app = meta["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "hasa_flower:server_app", "clientapp": "hasa_flower:client_app"}
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

