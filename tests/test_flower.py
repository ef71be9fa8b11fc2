"""Tests of partial participation, the many-client partitions, allocation from uploaded statistics,
and the Flower engine (issue: HASA on Flower). The fast tests use Flower's message path in this
process (:class:`hasa_flower.LocalGrid`, no Ray); the one test marked ``simulation`` runs Flower's
Simulation Engine (Ray) and is deselected with ``-m "not simulation"``."""
import json
import subprocess

import numpy as np
import pytest

import hasa_core as H

flwr = pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")
import hasa_flower as F  # noqa: E402

COMPARED = ("clients", "sizes", "scores", "widths", "budget", "budget_used", "budget_frac", "accuracy",
            "mean", "worst", "tail", "accuracy_full_model", "curve", "params_sha256")


def smoke(**changes):
    return H.config("smoke", **{"rounds": 2, "eval_every": 1, "max_examples_per_client": 40, **changes})


def assert_same_record(a, b):
    for key in COMPARED:
        assert a[key] == b[key], f"{key} differs between the engines"
    assert a.get("round_budget_used") == b.get("round_budget_used")


# --------------------------------------------------------------------------- participation

def test_participants_are_all_clients_at_full_participation_and_a_seeded_sorted_share_otherwise():
    cfg = H.config("smoke")
    assert H.participants(cfg, 0, 3, 7).tolist() == list(range(7))
    part = cfg.replace(participation=0.1)
    s = H.participants(part, 0, 3, 282)
    assert len(s) == 28 and np.all(np.diff(s) > 0)
    assert s.tolist() == H.participants(part, 0, 3, 282).tolist()
    assert s.tolist() != H.participants(part, 0, 4, 282).tolist()
    assert s.tolist() != H.participants(part, 1, 3, 282).tolist()
    assert len(H.participants(cfg.replace(participation=0.01), 0, 0, 7)) == 1  # at least one


def test_new_fields_at_their_defaults_keep_every_cache_key():
    """participation, partition, num_clients and dirichlet_alpha were added after engine 2: at their
    defaults they are not in the key (the committed engine-2 records stay valid); otherwise they are."""
    cfg = H.config("paper", policy="hasa")
    assert "participation" not in cfg.as_dict() and "partition" not in cfg.as_dict()
    assert H.record_path(cfg, 0).is_file(), "the committed engine-2 record of paper HASA seed 0 must be found"
    assert cfg.replace(participation=0.5).key() != cfg.key()
    assert cfg.replace(partition="publication_day").key() != cfg.key()
    assert H.RunConfig.from_dict(json.loads(json.dumps(cfg.replace(participation=0.5).as_dict()))) == \
        cfg.replace(participation=0.5)


def test_partial_participation_trains_only_the_drawn_clients_and_records_each_rounds_spend():
    cfg = smoke(policy="hasa", participation=0.5, rounds=3)
    rec = H.run(cfg, 0)
    spend = rec["round_budget_used"]
    assert len(spend) == 3
    sizes, widths = np.array(rec["sizes"]), np.array(rec["widths"])
    for rnd, used in enumerate(spend):
        s = H.participants(cfg, 0, rnd, 7)
        assert len(s) == 4
        assert used == pytest.approx(float((sizes[s] * widths[s]).sum() / sizes[s].sum()))
    # the widths are the full-participation allocation (made once, over all clients)
    assert rec["widths"] == H.run(smoke(policy="hasa", rounds=1), 0)["widths"]


def test_partial_participation_at_full_width_is_fedavg_over_the_drawn_clients():
    """Every client at width 1, half of them per round: both protocols are plain FedAvg over the
    round's participants, sum_{k in S} n_k theta_k / sum_{k in S} n_k."""
    cfg = smoke(policy="full", participation=0.5, rounds=1)
    task = H.load_task(cfg, 0)
    params = task.arch.init(task.arch.dims, H.torch.Generator().manual_seed(0))
    s = H.participants(cfg, 0, 0, len(task.clients))
    ups = [H.client_update(params, task.arch, task.clients[k], cfg, 1.0, 0, int(k), 0) for k in s]
    out, _ = H.train_rounds(params, task, cfg, [1.0] * 7, range(1), 0)
    n = np.array([u[2] for u in ups])
    for name in params:
        fedavg = sum(w * u[0][name].double() for u, w in zip(ups, n)) / n.sum()
        assert H.torch.allclose(out[name].double(), fedavg, atol=1e-6), name
        sel, _ = H.train_rounds(params, task, cfg.replace(aggregation="selective"), [1.0] * 7, range(1), 0)
        assert H.torch.equal(sel[name], out[name]), name


# --------------------------------------------------------------------------- many-client partitions

def test_publication_day_partition_keeps_pairs_with_two_titles():
    df = H.load_medium()
    clients = H.medium_clients(df, "publication_day")
    pairs = df.groupby(["publication", "date"]).size()
    assert len(pairs) == 310
    assert len(clients) == int((pairs >= 2).sum()) == 282
    assert sum(map(len, clients.values())) == int(pairs[pairs >= 2].sum())
    sizes = [len(v) for v in clients.values()]
    assert sizes == sorted(sizes, reverse=True)
    assert list(H.medium_clients(df)) == df["publication"].value_counts().index.tolist()


def test_dirichlet_partition_uses_every_example_once_with_skewed_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    parts = H.dirichlet_partition(labels, 100, 0.5, np.random.default_rng(1))
    joined = np.concatenate(parts)
    assert len(parts) == 100 and min(map(len, parts)) >= 5
    assert np.array_equal(np.sort(joined), np.arange(5000))
    classes_per_client = [len(np.unique(labels[p])) for p in parts]
    assert np.mean(classes_per_client) < 9  # skewed mixes, not i.i.d. draws of all 10 classes
    again = H.dirichlet_partition(labels, 100, 0.5, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    with pytest.raises(ValueError, match="cannot give 2000 clients"):
        H.dirichlet_partition(labels, 2000, 0.5, rng)


def test_unknown_partition_is_named():
    with pytest.raises(ValueError, match="unknown partition 'dirichlet' for benchmark 'medium'"):
        H.config("smoke", partition="dirichlet")


# --------------------------------------------------------------------------- allocation from statistics

@pytest.mark.parametrize("benchmark", ["medium", "digits"])
def test_plan_from_uploaded_statistics_equals_plan_from_the_data(benchmark):
    cfg = H.config("smoke", benchmark, policy="hasa", max_examples_per_client=60)
    task = H.load_task(cfg, 0)
    for score in H.SCORES:
        if score in H.NEEDS_DATA:
            with pytest.raises(ValueError, match="needs the clients' training data"):
                H.plan(cfg.replace(score=score), task.statistics(), 0)
            continue
        assert H.plan(cfg.replace(score=score), task.statistics(), 0) == H.plan(cfg.replace(score=score), task, 0)


# --------------------------------------------------------------------------- Flower engine

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


def test_subnet_params_and_round_traffic_hand_computed():
    """LSTM with V = 10, E = 8, H = 6 at width 1/2: e = 4, h = 3 units; embed 10x4, w_ih 12x4,
    w_hh 12x3, two biases of 12, decoder 10x3 + 10 = 40 + 48 + 36 + 24 + 40 = 188 parameters."""
    arch = H.lstm_arch(10, 8, 6)
    assert H.subnet_params(arch, 0.5) == 188
    assert H.subnet_params(arch, 1.0) == 10 * 8 + 24 * 8 + 24 * 6 + 48 + 10 * 6 + 10
    cfg = H.config("smoke", participation=0.5, rounds=3)
    widths = [0.5, 1.0, 0.5, 1.0]
    traffic = H.round_traffic(cfg, 0, arch, widths)
    for rnd, t in enumerate(traffic):
        s = H.participants(cfg, 0, rnd, 4)
        assert t == sum(H.subnet_params(arch, widths[k]) for k in s)
