"""Allocation: the published rule (Eqs. 13-17) by hand, the level rule, budget feasibility."""

import numpy as np
import pytest

import hasa_core as H

LEVELS = (0.25, 0.5, 0.75, 1.0)


COST = H.lstm_arch(3000, 128, 128).relative_cost


def test_rank01_averages_ties():
    assert H.rank01([3.0, 1.0, 3.0, 2.0]).tolist() == pytest.approx([2.5 / 3, 0.0, 2.5 / 3, 1 / 3])
    assert H.rank01([7.0]).tolist() == [0.5]


def test_published_widths_hand_computed_two_passes():
    # K = 3, scores ranked 0, 1/2, 1 -> preliminary w = 0.2, 0.5, 0.8 (Eq. 14)
    sizes, scores = np.array([2, 1, 1]), np.array([0.1, 0.2, 0.3])
    # shares 1/2, 1/4, 1/4: spend = 0.1 + 0.125 + 0.2 = 0.425; B = 0.5 -> scale 0.5 / 0.425
    s1 = 0.5 / 0.425
    w1 = np.minimum(np.maximum(np.array([0.2, 0.5, 0.8]) * s1, 0.2), 0.8)  # 0.8 * s1 > 0.8: capped
    s2 = 0.5 / (0.5 * w1[0] + 0.25 * w1[1] + 0.25 * w1[2])
    w2 = np.minimum(np.maximum(w1 * s2, 0.2), 0.8)
    got = H.published_widths(scores, sizes, budget=0.5, w_min=0.2, w_max=0.8, caps=0.8)
    assert got.tolist() == pytest.approx(w2.tolist(), rel=1e-12)
    assert got[2] == 0.8 and H.linear_budget_used(got, sizes) < 0.5  # budget left unmet after pass two
    # reversing the scores reverses the ranks
    rev = H.published_widths(-scores, sizes, budget=0.5, w_min=0.2, w_max=0.8, caps=0.8)
    assert rev[0] > rev[2]


def test_published_widths_budget_errors_and_per_client_caps():
    sizes = np.array([1, 1])
    with pytest.raises(ValueError, match=r"outside \[w_min, sum_k \(n_k/N\) cap_k\]"):
        H.published_widths([0, 1], sizes, budget=0.1, w_min=0.2, w_max=0.8, caps=0.8)
    with pytest.raises(ValueError, match=r"outside"):
        H.published_widths([0, 1], sizes, budget=0.75, w_min=0.2, w_max=0.8, caps=[0.8, 0.6])
    w = H.published_widths([0, 1], sizes, budget=0.5, w_min=0.2, w_max=0.8, caps=[0.8, 0.55])
    assert w[1] <= 0.55
    with pytest.raises(ValueError, match="w_min <= cap"):
        H.published_widths([0, 1], sizes, budget=0.5, w_min=0.2, w_max=0.8, caps=0.1)


def test_fjord_expected_width_spends_the_budget(tiny_cfg):
    assert H.expected_width(0.75, "ordered", (0.25, 0.5, 0.75, 1.0)) == pytest.approx(0.5)
    assert H.expected_width(0.6, "ordered", (0.25, 0.5, 0.75, 1.0)) == pytest.approx((0.25 + 0.5) / 2)  # p_max 0.5
    assert H.expected_width(0.6, "static", (0.25, 0.5)) == 0.6
    task = H.load_task(tiny_cfg, 0)
    uni = H.plan(tiny_cfg.replace(extraction="ordered"), task, 0)
    assert uni["widths"] == [0.75] * 7 and uni["budget_frac"] == pytest.approx(1.0)
    has = H.plan(tiny_cfg.replace(extraction="ordered", policy="hasa"), task, 0)
    assert has["budget_frac"] <= 1 + H.UNIT_TOL and set(has["widths"]) <= set(tiny_cfg.levels)


def test_fjord_maximum_width_is_a_level_and_no_slice_size_is_drawn_twice():
    """Official FjORD: p_max is a level and a client draws the levels up to it. A width off the
    levels snaps down (0.6 -> 0.5; 0.75 + 1.5e-12, the old bisection's overshoot, -> 0.75; below
    the smallest level -> the smallest level); every client of every seed's plan draws distinct
    slice sizes."""
    lv = (0.25, 0.5, 0.75, 1.0)
    snapped = [H.fjord_max_width(w, lv) for w in (0.6, 0.75 + 1.5e-12, 0.75 - 1e-12, 0.2, 1.0)]
    assert snapped == [0.5, 0.75, 0.75, 0.25, 1.0]
    assert H.fjord_widths(0.75 + 1.5e-12, lv) == [0.25, 0.5, 0.75]
    arch = H.lstm_arch(10, 128, 128)
    cfg = H.config("smoke", extraction="ordered")
    for seed in range(3):
        task = H.load_task(cfg, seed)
        for policy in ("uniform", "hasa", "reverse"):
            for w in H.plan(cfg.replace(policy=policy), task, seed)["widths"]:
                sizes = [arch.units(v)["hid"] for v in H.fjord_widths(w, cfg.levels)]
                assert len(sizes) == len(set(sizes)) and w in cfg.levels


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


@pytest.mark.parametrize("benchmark", ["medium", "digits"])
def test_plan_from_uploaded_statistics_equals_plan_from_the_data(benchmark):
    cfg = H.config("smoke", benchmark, policy="hasa", max_examples_per_client=60)
    task = H.load_task(cfg, 0)
    for score in H.SCORES:
        if score in H.NEEDS_DATA:
            with pytest.raises(ValueError, match="needs the clients' training data"):
                H.plan(cfg.replace(score=score), task.statistics(), 0)
            continue
        given = {"score_values": tuple(range(len(task.clients)))} if score == "given" else {}
        c = cfg.replace(score=score, **given)
        assert H.plan(c, task.statistics(), 0) == H.plan(c, task, 0)


def test_given_scores_allocate_by_the_values_and_need_one_per_client():
    """score 'given': the published rule on the config's values (larger value, wider), one per client."""
    cfg = H.config("smoke", "digits", policy="hasa", score="given", score_values=(5.0, 1.0, 4.0, 2.0, 3.0))
    task = H.load_task(cfg, 0)
    p = H.plan(cfg, task, 0)
    assert p["scores"] == [5.0, 1.0, 4.0, 2.0, 3.0]
    w, v = p["widths"], cfg.score_values
    assert all(w[i] >= w[j] for i in range(5) for j in range(5) if v[i] > v[j]) and w[0] > w[1]
    with pytest.raises(ValueError, match="one value per client: score_values has 2"):
        H.plan(cfg.replace(score_values=(1.0, 2.0)), task, 0)
    for bad in ({"score_values": ()}, {"score": "js"}):
        with pytest.raises(ValueError, match="score_values go with score 'given' and only with it"):
            cfg.replace(**bad)
