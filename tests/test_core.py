"""Unit tests pinning the behaviour of hasa_core: slicing, aggregation, budget, allocation,
extraction rules, scores, statistics, caching, determinism and error messages."""
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import hasa_core as H

# --------------------------------------------------------------------------- helpers


def tiny_lstm(vocab=5, emb=4, hid=4):
    return H.lstm_arch(vocab, emb, hid)


def counting_params(arch):
    """Parameters whose every element equals its flat position: slices are easy to read."""
    return {n: torch.arange(p.numel(), dtype=torch.float32).view_as(p)
            for n, p in arch.init(arch.dims, torch.Generator().manual_seed(0)).items()}


# --------------------------------------------------------------------------- slicing


def test_axis_entries_gate_blocks_and_flatten():
    idx = torch.tensor([0, 2])
    # LSTM gates: 4 blocks of D = 3 units -> rows b*3 + i
    assert H.Axis("hid", outer=4).entries(idx, 3).tolist() == [0, 2, 3, 5, 6, 8, 9, 11]
    # flattened C x 2 map: channel i occupies entries 2i, 2i+1
    assert H.Axis("c", inner=2).entries(idx, 3).tolist() == [0, 1, 4, 5]


def test_lstm_extraction_hand_computed():
    arch = tiny_lstm(vocab=3, emb=2, hid=2)
    p = counting_params(arch)
    sub = H.extract(p, arch, {"emb": torch.tensor([1]), "hid": torch.tensor([0])})
    # w_ih is (4H=8, E=2): rows 0,2,4,6 (unit 0 of each gate), column 1 -> flat 2r+1
    assert sub["w_ih"].tolist() == [[1.0], [5.0], [9.0], [13.0]]
    # w_hh is (8, 2): rows 0,2,4,6, column 0
    assert sub["w_hh"].tolist() == [[0.0], [4.0], [8.0], [12.0]]
    assert sub["b_ih"].tolist() == [0.0, 2.0, 4.0, 6.0]
    # embedding (V=3, E=2): every vocabulary row kept, column 1
    assert sub["embed"].tolist() == [[1.0], [3.0], [5.0]]
    # decoder (V=3, H=2): every row kept, column 0; bias never sliced
    assert sub["dec_w"].tolist() == [[0.0], [2.0], [4.0]]
    assert sub["dec_b"].tolist() == [0.0, 1.0, 2.0]


def test_cnn_fc_slicing_follows_conv_channels():
    arch = H.cnn_arch(2, 2, 2)
    p = counting_params(arch)
    sub = H.extract(p, arch, {"c1": torch.tensor([0]), "c2": torch.tensor([1]), "fc": torch.tensor([1])})
    # fc1_w is (2, 2*49): row 1, columns 49..97 (channel 1's 7x7 map)
    assert sub["fc1_w"].shape == (1, 49)
    assert sub["fc1_w"][0, 0].item() == 98 + 49 and sub["fc1_w"][0, -1].item() == 98 + 97
    assert sub["fc2_w"].shape == (10, 1)  # the 10 classes are never sliced
    assert sub["conv2_w"].shape == (1, 1, 3, 3)


def test_subnet_forward_runs_at_every_level():
    arch = tiny_lstm(vocab=7, emb=8, hid=8)
    p = arch.init(arch.dims, torch.Generator().manual_seed(0))
    x = torch.randint(7, (3, 5))
    for w in (0.25, 0.5, 0.75, 1.0):
        sub = H.extract(p, arch, H.client_indices("static", arch, w, 0, None))
        assert arch.forward(sub, x).shape == (3, 5, 7)


# --------------------------------------------------------------------------- aggregation


def test_aggregation_hand_computed():
    arch = H.cnn_arch(2, 2, 2)
    old = {n: torch.zeros_like(v) for n, v in arch.init(arch.dims, torch.Generator()).items()}
    full = {d: torch.arange(2) for d in arch.dims}
    half = {d: torch.tensor([1]) for d in arch.dims}
    a = {n: torch.full_like(v, 1.0) for n, v in old.items()}                  # client A: full width, n=1
    b = {n: torch.full_like(v, 4.0) for n, v in H.extract(old, arch, half).items()}  # client B: unit 1, n=3
    new = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)])
    # conv1 bias: unit 0 trained by A only -> 1; unit 1 by both -> (1*1 + 3*4) / 4 = 3.25
    assert new["conv1_b"].tolist() == [1.0, 3.25]
    # fc2 bias (never sliced) trained by both
    assert torch.allclose(new["fc2_b"], torch.full((10,), 3.25))


def test_untrained_elements_keep_their_value():
    arch = H.cnn_arch(2, 2, 2)
    old = {n: torch.full_like(v, 7.0) for n, v in arch.init(arch.dims, torch.Generator()).items()}
    idx = {d: torch.tensor([0]) for d in arch.dims}
    upd = {n: torch.zeros_like(v) for n, v in H.extract(old, arch, idx).items()}
    new = H.aggregate(old, arch, [(upd, idx, 5.0)])
    assert new["conv1_b"].tolist() == [0.0, 7.0]


def test_full_width_reduces_to_fedavg():
    arch = tiny_lstm()
    g = torch.Generator().manual_seed(1)
    old = arch.init(arch.dims, g)
    full = {d: torch.arange(n) for d, n in arch.dims.items()}
    clients = [(arch.init(arch.dims, g), full, w) for w in (10.0, 30.0, 60.0)]
    new = H.aggregate(old, arch, clients)
    for name in old:
        fedavg = sum(w * p[name] for p, _, w in clients) / 100.0
        assert torch.allclose(new[name], fedavg, atol=1e-6)


# --------------------------------------------------------------------------- cost and budget


def test_relative_cost_from_architecture():
    arch = H.lstm_arch(vocab=100, emb=8, hidden=8)
    full = 8 * 8 * 16 + 2 * 8 * 100
    half = 8 * 4 * 8 + 2 * 4 * 100
    assert arch.relative_cost(1.0) == 1.0
    assert math.isclose(arch.relative_cost(0.5), half / full)


def test_ordered_expected_cost_is_mean_over_allowed_levels():
    arch = H.lstm_arch(vocab=100, emb=8, hidden=8)
    lv = (0.25, 0.5, 0.75, 1.0)
    expect = np.mean([arch.relative_cost(w) for w in (0.25, 0.5, 0.75)])
    assert math.isclose(H.effective_cost(arch, 0.75, "ordered", lv), expect)


LEVELS = (0.25, 0.5, 0.75, 1.0)
COST = H.lstm_arch(3000, 128, 128).relative_cost


@pytest.mark.parametrize("seed", range(20))
def test_hasa_allocations_are_feasible_monotone_and_maximal(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    sizes = rng.integers(10, 5000, k)
    scores = rng.random(k)
    w_ref = float(rng.choice(LEVELS))
    budget = H.budget_of(sizes, COST, w_ref)
    for policy, sign in (("hasa_levels", 1), ("reverse_levels", -1)):
        w = H.allocate(scores, sizes, levels=LEVELS, cost=COST, budget=budget, policy=policy)
        assert H.budget_used(w, sizes, COST) <= budget * (1 + 1e-9)
        s = sign * scores
        order = sorted(range(k), key=lambda i: (-s[i], i))
        assert all(w[order[i]] >= w[order[i + 1]] for i in range(k - 1))  # monotone in score
        for pos, i in enumerate(order):  # maximal: no client can go one level up
            if w[i] == LEVELS[-1]:
                continue
            up = list(w)
            up[i] = LEVELS[LEVELS.index(w[i]) + 1]
            breaks_monotone = pos > 0 and up[i] > w[order[pos - 1]]
            assert breaks_monotone or H.budget_used(up, sizes, COST) > budget


def test_uniform_is_w_ref_and_hasa_is_deterministic():
    sizes, scores = np.array([100, 50, 10]), np.array([0.1, 0.5, 0.9])
    b = H.budget_of(sizes, COST, 0.5)
    assert H.allocate(scores, sizes, levels=LEVELS, cost=COST, budget=b, policy="uniform") == [0.5] * 3
    # budget 160 c(.5): client 2 (top score) and client 1 go to full width first
    w1 = H.allocate(scores, sizes, levels=LEVELS, cost=COST, budget=b, policy="hasa_levels")
    w2 = H.allocate(scores, sizes, levels=LEVELS, cost=COST, budget=b, policy="hasa_levels")
    assert w1 == w2 and w1[2] >= w1[1] >= w1[0]


def test_hasa_hand_computed_linear_cost():
    lin = lambda w: w  # noqa: E731
    sizes, scores = np.array([4, 2, 2]), np.array([0.0, 1.0, 2.0])
    # B = 8 * 0.5 = 4; start 8 * .25 = 2; client 2: +2*.75 = 3.5; client 1: up to .5 -> +0.5 = 4
    w = H.allocate(scores, sizes, levels=LEVELS, cost=lin, budget=4.0, policy="hasa_levels")
    assert w == [0.25, 0.5, 1.0]
    assert H.allocate(scores, sizes, levels=LEVELS, cost=lin, budget=4.0, policy="reverse_levels") == [0.75, 0.25, 0.25]


def test_budget_too_small_and_bad_input_fail_clearly():
    sizes = np.array([10, 10])
    with pytest.raises(ValueError, match="smallest level"):
        H.allocate([0, 1], sizes, levels=LEVELS, cost=COST, budget=0.1, policy="hasa_levels")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        H.allocate([0, 1], sizes, levels=(0.0, 0.5), cost=COST, budget=10, policy="hasa_levels")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        H.allocate([0, 1], sizes, levels=(0.5, 1.5), cost=COST, budget=10, policy="hasa_levels")
    with pytest.raises(ValueError, match="empty clients"):
        H.allocate([0, 1], np.array([10, 0]), levels=LEVELS, cost=COST, budget=10, policy="hasa_levels")
    with pytest.raises(ValueError, match="valid names: full, hasa_levels, reverse_levels, smallest, uniform"):
        H.allocate([0, 1], sizes, levels=LEVELS, cost=COST, budget=10, policy="greedy")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*js.*random"):
        H.config("smoke", score="kl")
    with pytest.raises(ValueError, match="valid names: ordered, random, rolling, static"):
        H.config("smoke", extraction="sliding")
    with pytest.raises(ValueError, match="valid names: .*hasa"):
        H.config("smoke", policy="best")
    with pytest.raises(ValueError, match="valid names: paper, smoke"):
        H.config("huge")


# --------------------------------------------------------------------------- extraction rules


ARCH8 = H.lstm_arch(10, 8, 8)


def test_static_is_nested_and_fixed():
    a = H.client_indices("static", ARCH8, 0.5, 0, None)
    b = H.client_indices("static", ARCH8, 0.5, 7, None)
    c = H.client_indices("static", ARCH8, 0.75, 3, None)
    assert a["hid"].tolist() == b["hid"].tolist() == [0, 1, 2, 3]
    assert set(a["hid"].tolist()) < set(c["hid"].tolist())


def test_rolling_advances_one_per_round_and_wraps():
    assert H.client_indices("rolling", ARCH8, 0.5, 1, None)["hid"].tolist() == [1, 2, 3, 4]
    assert H.client_indices("rolling", ARCH8, 0.5, 6, None)["hid"].tolist() == [0, 1, 6, 7]
    seen = set()
    for r in range(8):
        seen |= set(H.client_indices("rolling", ARCH8, 0.25, r, None)["hid"].tolist())
    assert seen == set(range(8))  # every unit trained over D rounds


def test_random_is_fresh_per_draw_and_seeded():
    draw = lambda s: H.client_indices("random", ARCH8, 0.5, 0, np.random.default_rng(s))["hid"].tolist()  # noqa: E731
    assert draw(1) == draw(1)
    assert len({tuple(draw(s)) for s in range(10)}) > 1
    assert all(len(draw(s)) == 4 and len(set(draw(s))) == 4 for s in range(10))


# --------------------------------------------------------------------------- scores


def test_js_divergence_against_definition():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    m = (p + q) / 2
    kl = lambda a, b: np.sum(a[a > 0] * np.log(a[a > 0] / b[a > 0]))  # noqa: E731
    assert math.isclose(H.js_divergence(p, q), 0.5 * kl(p, m) + 0.5 * kl(q, m))
    assert H.js_divergence(q, q) == pytest.approx(0.0)


# --------------------------------------------------------------------------- statistics


def test_paired_stats_match_scipy():
    a = np.array([14.1, 14.5, 13.9, 14.8, 14.2, 14.0, 14.6, 14.3, 14.4, 14.7])
    b = np.array([13.8, 14.0, 13.7, 14.1, 13.9, 14.1, 14.0, 13.6, 13.8, 14.2])
    s = H.paired_stats(a, b)
    assert s["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert s["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    d = a - b
    assert s["diff"] == pytest.approx(d.mean())
    assert s["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert s["ci_low"] < d.mean() < s["ci_high"]
    assert s["wins"] == 9


def test_holm_adjustment():
    assert H.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_summaries_tail_is_lowest_quarter():
    s = H.summarize_accuracies([0.5, 0.1, 0.3, 0.2, 0.4, 0.6, 0.7])  # K = 7 -> tail of 2
    assert s["worst"] == 0.1 and s["tail"] == pytest.approx(0.15) and s["mean"] == pytest.approx(0.4)


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- runs and caching


@pytest.fixture(scope="module")
def tiny_cfg():
    return H.config("smoke", rounds=2, max_examples_per_client=30, emb_dim=16, hidden_dim=16)


def test_same_config_and_seed_give_identical_numbers(tiny_cfg):
    a, b = H.run(tiny_cfg, 3), H.run(tiny_cfg, 3)
    assert a["accuracy"] == b["accuracy"] and a["curve"] == b["curve"]
    c = H.run(tiny_cfg, 4)
    assert c["accuracy"] != a["accuracy"]


def test_run_records_budget_and_respects_it(tiny_cfg):
    for policy in ("uniform", "hasa", "reverse", "uniform_levels", "hasa_levels", "reverse_levels"):
        rec = H.run(tiny_cfg.replace(policy=policy), 0)
        assert len(rec["accuracy"]) == len(rec["clients"]) == 7
        if policy.endswith("_levels"):  # our rule: never above the FLOP budget
            assert rec["budget_kind"] == "flops" and rec["budget_used"] <= rec["budget"] * (1 + 1e-9)
        else:  # the published rule's two passes may miss B a little; recorded, not corrected
            assert rec["budget_kind"] == "linear" and abs(rec["budget_frac"] - 1) < 0.01
    assert H.run(tiny_cfg, 0)["widths"] == [0.5] * 7  # uniform = B


def test_cache_is_written_atomically_and_reused(tiny_cfg, tmp_path, monkeypatch):
    calls = []
    real_run = H.run
    monkeypatch.setattr(H, "run", lambda c, s: calls.append(s) or real_run(c, s))
    rec = H.cached_run(tiny_cfg, 0, tmp_path)
    again = H.cached_run(tiny_cfg, 0, tmp_path)
    assert calls == [0] and rec == again

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(H.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        H.cached_run(tiny_cfg, 1, tmp_path)
    folder = H.record_path(tiny_cfg, 1, tmp_path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["seed0.json"]  # no half-written record


# --------------------------------------------------------------------------- issue 4/5 additions


def test_shuffled_scores_are_a_permutation(tiny_cfg):
    task = H.load_task(tiny_cfg, 0)
    a = H.plan(tiny_cfg.replace(policy="hasa"), task, 0)["scores"]
    b = H.plan(tiny_cfg.replace(policy="hasa", shuffle_scores=True), task, 0)["scores"]
    assert sorted(a) == sorted(b) and a != b


def test_size_corrected_js_removes_the_sampling_part():
    """A client drawn from the pooled distribution has a large raw JS when small, but a
    size-corrected JS near zero."""
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(200))
    counts = np.stack([rng.multinomial(n, q) for n in (50, 200, 100_000)])
    clients = tuple(H.Client(str(i), (), (), c, c) for i, c in enumerate(counts))
    task = H.Task("toy", clients, H.lstm_arch(200, 4, 4), 200)
    raw = H.score_js_targets(task, None, rng)
    corr = H.score_js_sizecorr(task, None, np.random.default_rng(1), draws=64)
    assert raw[0] > raw[1] > raw[2]
    assert np.all(np.abs(corr) < 0.25 * raw[0])


def test_score_registry_covers_model_and_feature_scores(tiny_cfg):
    task = H.load_task(tiny_cfg, 0)
    for name in ("js", "js_targets", "js_sizecorr", "entropy", "feature_js", "loss", "size", "random"):
        s = H.compute_scores(name, task, tiny_cfg.replace(warmup_rounds=1), np.random.default_rng(0))
        assert s.shape == (7,) and np.all(np.isfinite(s))


def test_ordered_dropout_trains_only_the_drawn_nested_slice(tiny_cfg):
    """FjORD: with the only allowed level 1/4, a full-width subnet's units beyond the first quarter
    get no gradient, so local training leaves them exactly unchanged."""
    task = H.load_task(tiny_cfg, 0)
    arch = task.arch
    params = arch.init(arch.dims, torch.Generator().manual_seed(0))
    out = H.local_train(params, arch, task.clients[0], tiny_cfg, torch.Generator().manual_seed(1),
                        ordered_levels=(0.25,))
    q = arch.units(0.25)["hid"]
    assert torch.equal(out["w_hh"][:, q:], params["w_hh"][:, q:])
    assert torch.equal(out["dec_w"][:, q:], params["dec_w"][:, q:])
    assert not torch.equal(out["dec_w"][:, :q], params["dec_w"][:, :q])


def test_readme_tables_come_from_results(tmp_path):
    (tmp_path / "t1.md").write_text("| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- table: t1 -->\nold\n<!-- end table -->\n<!-- table: missing -->\nkeep\n<!-- end table -->\n")
    assert H.update_readme(readme, tmp_path) == ["t1"]
    assert readme.read_text() == ("x\n<!-- table: t1 -->\n| a |\n|---|\n| 1 |\n<!-- end table -->\n"
                                  "<!-- table: missing -->\nkeep\n<!-- end table -->\n")


def test_empty_client_fails_before_training():
    with pytest.raises(ValueError, match="max_examples_per_client must be None .* or >= 2"):
        H.config("smoke", max_examples_per_client=1)  # 1 title: nothing left for train or test
    with pytest.raises(ValueError, match="client sizes must be positive"):
        H.published_widths([0.1, 0.2], [10, 0], budget=0.5, w_min=0.2, w_max=0.8, caps=0.8)
