"""Heterogeneity scores: Eq. 11 by hand, the controls, the registry."""
import math

import numpy as np
import pytest

import hasa_core as H


def test_js_divergence_against_definition():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    m = (p + q) / 2
    kl = lambda a, b: np.sum(a[a > 0] * np.log(a[a > 0] / b[a > 0]))  # noqa: E731
    assert math.isclose(H.js_divergence(p, q), 0.5 * kl(p, m) + 0.5 * kl(q, m))
    assert H.js_divergence(q, q) == pytest.approx(0.0)


def test_smoothed_js_hand_computed():
    counts = np.array([[2.0, 0.0], [0.0, 2.0]])
    # alpha = 1, V = 2: p_0 = (3/4, 1/4), p_1 = (1/4, 3/4); pooled (2+1, 2+1)/6 = (1/2, 1/2)
    p, q = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    m = (p + q) / 2
    expect = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert H.smoothed_js(counts, 1.0) == pytest.approx([expect, expect], rel=1e-12)
    # alpha = 0 is the unsmoothed JS of the normalised counts
    assert H.smoothed_js(counts, 0.0) == pytest.approx(H.js_divergence(np.eye(2), q[None, :]))
    with pytest.raises(ValueError, match="non-negative"):
        H.smoothed_js(counts, -1.0)


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


def test_shuffled_scores_are_a_permutation(tiny_cfg):
    task = H.load_task(tiny_cfg, 0)
    a = H.plan(tiny_cfg.replace(policy="hasa"), task, 0)["scores"]
    b = H.plan(tiny_cfg.replace(policy="hasa", shuffle_scores=True), task, 0)["scores"]
    assert sorted(a) == sorted(b) and a != b
