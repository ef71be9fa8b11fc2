"""Supernets: slicing by hand-computed cases, the extraction rules, the cost model, traffic."""
import math

import numpy as np
import pytest
import torch
from helpers import counting_params, tiny_lstm

import hasa_core as H

ARCH8 = H.lstm_arch(10, 8, 8)


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


def test_memoised_flat_index_equals_a_fresh_computation():
    arch = H.lstm_arch(10, 8, 8)
    idx = {"emb": torch.tensor([1, 3]), "hid": torch.tensor([0, 5, 6])}
    shape = (32, 8)
    a = H.flat_index(shape, arch.axes["w_ih"], idx, arch.dims)
    H._flat_index_cached.cache_clear()
    b = H.flat_index(shape, arch.axes["w_ih"], idx, arch.dims)
    assert torch.equal(a, b) and a.shape == (12, 2)
    full = torch.arange(32 * 8).view(32, 8)
    rows = torch.tensor([0, 5, 6, 8, 13, 14, 16, 21, 22, 24, 29, 30])
    assert torch.equal(full.view(-1)[a], full[rows][:, [1, 3]])


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


def test_unit_movement_is_the_norm_of_each_units_change_over_its_gate_blocks():
    arch = tiny_lstm(vocab=5, emb=4, hid=4)
    init = arch.init(arch.dims, torch.Generator().manual_seed(0))
    final = {n: p.clone() for n, p in init.items()}
    final["w_ih"][[1, 5, 9, 13]] += 1.0      # hidden unit 1's row in each of the 4 gate blocks, 4 entries each
    final["embed"][:, 2] += 0.5               # embedding column 2, 5 rows
    moved = {(e["param"], e["axis"]): e["norm"] for e in H.unit_movement(init, final, arch)}
    assert moved[("w_ih", 0)] == [0.0, 4.0, 0.0, 0.0]                 # sqrt(16 entries x 1^2)
    assert moved[("w_ih", 1)] == pytest.approx([2.0] * 4)             # each emb column: 4 changed rows
    assert moved[("embed", 1)] == pytest.approx([0.0, 0.0, 0.5 * 5 ** 0.5, 0.0], rel=1e-3)  # 4 digits kept
    assert moved[("dec_w", 1)] == [0.0] * 4 and ("dec_b", 0) not in moved  # output classes never slice
