"""Node files (deployment without central data): a node's task built from its partition file and
the shared vocabulary file equals its client of the central task; a file holds one client's data;
files written for another run are refused with one clear message."""

import inspect
import json
import re

import numpy as np
import pytest
import torch
from helpers import smoke

import hasa_core as H
import hasa_flower.dataset as D


def assert_same_client(a, b):
    assert a.name == b.name
    for part in ("train", "test"):
        ga, gb = getattr(a, part), getattr(b, part)
        assert len(ga) == len(gb)
        for (xa, ya), (xb, yb) in zip(ga, gb):
            assert (xa.dtype, ya.dtype) == (xb.dtype, yb.dtype)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for counts in ("label_counts", "feature_counts"):
        assert getattr(a, counts).dtype == getattr(b, counts).dtype
        assert np.array_equal(getattr(a, counts), getattr(b, counts))


@pytest.fixture(scope="module")
def smoke_files(tmp_path_factory):
    """The node files of the two-round smoke config (40 titles per client), seed 0."""
    out = tmp_path_factory.mktemp("nodes")
    return smoke(), out, D.write_node_files(smoke(), 0, out)


@pytest.mark.parametrize("benchmark", ["medium", "digits"])
def test_a_node_task_from_its_files_is_its_client_of_the_central_task(tmp_path, benchmark):
    """Tensor for tensor, with the same vocabulary, ignored class, special classes and architecture;
    the node's builder never opens the data set."""
    cfg = smoke() if benchmark == "medium" else H.config("smoke", "digits", max_examples_per_client=40,
                                                         max_test_per_domain=40)
    paths = D.write_node_files(cfg, 1, tmp_path)
    central = H.load_task(cfg, 1)
    k_last = len(central.clients) - 1
    assert paths == [tmp_path / D.VOCAB_FILE, *(tmp_path / D.partition_file_name(k) for k in range(k_last + 1))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(H, "data_dir", lambda: pytest.fail("a node built from its files looked for the data set"))
        for k in (0, k_last):
            got_k, task = D.node_task(cfg, 1, tmp_path / D.VOCAB_FILE, tmp_path / D.partition_file_name(k))
            assert got_k == k and len(task.clients) == 1
            assert_same_client(task.clients[0], central.clients[k])
            assert (task.name, task.vocab, task.num_classes, task.ignore_class, task.special, task.arch.dims) == (
                central.name, central.vocab, central.num_classes, central.ignore_class, central.special,
                central.arch.dims)


def test_a_partition_file_holds_its_clients_titles_only(smoke_files):
    cfg, out, _ = smoke_files
    splits = list(H.medium_splits(cfg, 0).items())
    k = 2
    _, (train, test) = splits[k]
    with np.load(out / D.partition_file_name(k), allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    assert set(arrays) == {"header", "train_tokens", "train_lengths", "test_tokens", "test_lengths"}
    header = json.loads(str(arrays["header"]))
    shared = json.loads((out / D.VOCAB_FILE).read_text())
    assert header == {"made_by": D.node_files_identity(cfg, 0), "partition_id": k, "name": splits[k][0],
                      "num_clients": len(splits), "vocab_digest": shared["digest"],
                      "digest": D.arrays_digest(header, {n: a for n, a in arrays.items() if n != "header"})}
    assert arrays["train_tokens"].tolist() == [w for t in train for w in t]
    assert arrays["test_tokens"].tolist() == [w for t in test for w in t]
    assert arrays["train_lengths"].tolist() == [len(t) for t in train]
    assert set(shared) == {"made_by", "num_clients", "vocab", "digest"}  # no titles, no per-client counts
    assert shared["made_by"] == D.node_files_identity(cfg, 0) and shared["num_clients"] == len(splits)


@pytest.mark.parametrize("cfg_changes, seed, wrong", [
    ({}, 1, r"seed 0 \(this run: 1\)"),
    ({"max_examples_per_client": 30}, 0, r"config_key '[0-9a-f]{16}' \(this run: '[0-9a-f]{16}'\)"),
    ({"benchmark": "digits"}, 0, r"benchmark 'medium' \(this run: 'digits'\)"),
])
def test_node_files_of_another_run_are_refused_with_one_clear_message(smoke_files, cfg_changes, seed, wrong):
    cfg, out, _ = smoke_files
    with pytest.raises(D.NodeFilesError, match=rf"vocab\.json was written for another run: .*{wrong}.*"
                                               r"Write this node's files again"):
        D.node_task(cfg.replace(**cfg_changes), seed, out / D.VOCAB_FILE, out / D.partition_file_name(0))


def test_a_partition_file_of_another_data_set_is_refused(smoke_files, tmp_path, monkeypatch):
    cfg, out, _ = smoke_files
    other = H.dataclasses.replace(H.BENCHMARKS["medium"], files={H.MEDIUM_FILE: "0" * 64})
    monkeypatch.setitem(H.BENCHMARKS, "medium", other)  # as if this code expected another CSV
    with pytest.raises(D.NodeFilesError, match=r"partition-3\.npz was written for another run: data_sha256 "):
        D.read_partition_file(out / D.partition_file_name(3), cfg, 0)


def test_node_files_serve_every_config_that_agrees_on_the_data(smoke_files):
    cfg, out, _ = smoke_files
    other = cfg.replace(policy="hasa", extraction="rolling", rounds=5, lr=0.5, hidden_dim=32)
    k, task = D.node_task(other, 0, out / D.VOCAB_FILE, out / D.partition_file_name(4))
    assert k == 4 and task.arch.dims == H.build_arch(other, len(task.vocab)).dims


def test_data_fields_name_every_config_field_the_task_builders_read():
    """A field the builders read but the benchmark's data_fields lack would let stale node files through."""
    builders = {"medium": (H.medium_splits, H.medium_partition),
                "digits": (H.digits_refs, H._dirichlet_digits_refs, H.digits_partition),
                "shakespeare": (H.shakespeare_roles, H.shakespeare_partition)}
    for benchmark, functions in builders.items():
        read = {f for fn in functions for f in re.findall(r"\bcfg\.(\w+)", inspect.getsource(fn))}
        fields = set(H.BENCHMARKS[benchmark].data_fields)
        assert read <= fields, f"{benchmark}: {read - fields}"
