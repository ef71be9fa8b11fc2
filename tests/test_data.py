"""Data: tokenizer, checksums and clear errors, installing data, partitions into clients."""

import numpy as np
import pytest
import torch

import hasa_core as H


def test_tokenizer_handles_markup_nbsp_and_quotes():
    raw = '<strong class="markup--strong">Don\u2019t Panic:\u00a0A&amp;B</strong>'
    assert H.tokenize(raw) == ["don't", "panic", ":", "a", "&", "b"]


def test_missing_and_corrupt_data_fail_with_one_clear_message(tmp_path):
    with pytest.raises(H.DataError, match=r"missing\. Get it from .*Kaggle.* and put it at"):
        H.load_medium(tmp_path)
    (tmp_path / H.MEDIUM_FILE).write_text("id,title\n1,hello\n")
    with pytest.raises(H.DataError, match="expected 9e4f33"):
        H.load_medium(tmp_path)
    with pytest.raises(H.DataError, match="missing"):
        H.load_digit_domain("usps", tmp_path)
    with pytest.raises(ValueError, match="valid: .*usps"):
        H.load_digit_domain("svhn", tmp_path)


def test_missing_data_dir_variable_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HASA_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(H.DataError, match="HASA_DATA_DIR=.*nowhere.* is not a folder"):
        H.load_medium()


def test_kaggle_command_in_the_message_is_complete():
    assert "kaggle datasets download dorianlazar/medium-articles-dataset --unzip -p data" in H.MEDIUM_SOURCE


def test_install_data_replaces_a_corrupt_file_only(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "digits").mkdir(parents=True)
    (dest / "digits").mkdir(parents=True)
    good = b"any bytes"
    import hashlib
    sha = hashlib.sha256(good).hexdigest()
    (src / "digits" / "usps.npz").write_bytes(good)
    (dest / "digits" / "usps.npz").write_bytes(b"corrupt")
    files = {"digits/usps.npz": sha, "digits/mnist.npz": sha}
    install = _install_module()
    orig = H.data_files
    try:
        H.data_files = lambda: files
        st = install.install_data(src, dest)
        assert st == {"digits/usps.npz": "copied", "digits/mnist.npz": "not in source"}
        assert (dest / "digits" / "usps.npz").read_bytes() == good
        assert install.install_data(src, dest)["digits/usps.npz"] == "ok"
        (src / "digits" / "mnist.npz").write_bytes(b"wrong")
        assert install.install_data(src, dest)["digits/mnist.npz"] == "wrong sha256 in source"
    finally:
        H.data_files = orig
    assert not list(dest.rglob(".tmp-*"))


def _install_module():
    """data/install.py, imported as a module (it is a script beside the data)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("install", H.REPO / "data" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_data_file_comes_from_a_benchmark_with_its_source():
    """data_files is the union of the benchmarks' files; each benchmark says where to get them."""
    assert H.data_files() == {rel: sha for b in H.BENCHMARKS.values() for rel, sha in b.files.items()}
    assert all(b.source and b.files for b in H.BENCHMARKS.values())


def test_empty_client_fails_before_training():
    with pytest.raises(ValueError, match="max_examples_per_client must be None .* or >= 2"):
        H.config("smoke", max_examples_per_client=1)  # 1 title: nothing left for train or test
    with pytest.raises(ValueError, match="client sizes must be positive"):
        H.published_widths([0.1, 0.2], [10, 0], budget=0.5, w_min=0.2, w_max=0.8, caps=0.8)


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


@pytest.mark.parametrize("benchmark, changes", [
    ("medium", {"partition": "publication_day"}),
    ("digits", {"digits_clients_per_domain": 3}),
    ("digits", {"partition": "dirichlet", "num_clients": 40})])
def test_a_client_built_alone_is_the_client_of_the_whole_task(benchmark, changes):
    """A node builds only the clients it serves (Partition.task([k])); each is, tensor for tensor,
    client k of load_task, although images are converted per client instead of per domain."""
    cfg = H.config("smoke", benchmark, **changes)
    part, whole = H.partition(cfg, 2), H.load_task(cfg, 2)
    assert part.names == tuple(c.name for c in whole.clients)
    for k in (0, len(part) // 2, len(part) - 1):
        alone = part.task([k])
        assert alone.vocab == whole.vocab and alone.arch.dims == whole.arch.dims
        a, b = alone.clients[0], whole.clients[k]
        assert a.name == b.name and np.array_equal(a.label_counts, b.label_counts)
        assert np.array_equal(a.feature_counts, b.feature_counts)
        for ga, gb in ((a.train, b.train), (a.test, b.test)):
            assert len(ga) == len(gb) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(ga, gb))


def test_images_gathered_per_client_are_the_rows_of_the_whole_conversion():
    """Resizing acts on each image alone: converting a few images gives the rows of the whole array."""
    for domain in ("usps", "mnist_m"):
        x, y, n_train = H.digit_pool(domain)
        idx = np.array([3, 17, 18, 400, len(y) - 1])
        got, labels = H.gather_images([(domain, idx[:2]), (domain, idx[2:])], {domain: (x, y, n_train)})
        assert np.array_equal(got, H.to_grey28(x)[idx]) and np.array_equal(labels, y[idx])
    empty, none = H.gather_images([("usps", np.array([], dtype=np.int64))], {})
    assert empty.shape == (0, 3, 28, 28) and none.shape == (0,)
