"""Local training, aggregation by hand-computed cases, FedAvg at full width, per-client
randomness, participation, evaluation summaries."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import smoke

import hasa_core as H


def test_fused_linear_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(25, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(25, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(25, (40,), generator=g)
    ours = H.linear_cross_entropy(h, w, b, y)
    ref = F.cross_entropy(F.linear(h, w, b), y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, c in zip(torch.autograd.grad(ours, [h, w, b]), torch.autograd.grad(ref, [h, w, b])):
        assert torch.allclose(a, c, atol=1e-14)


def test_clip_is_torchs_clip_grad_norm_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(7, 3, generator=g) * 5, torch.randn(11, generator=g)]
    ref = [t.clone().requires_grad_() for t in grads]
    for r, t in zip(ref, grads):
        r.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(ref, 0.7)
    ours = [t.clone() for t in grads]
    H.clip_grad_norm_(ours, 0.7)
    assert all(torch.equal(a, r.grad) for a, r in zip(ours, ref))


def test_row_gradient_training_equals_dense_training(tiny_cfg):
    """Local training with the embedding gradient over the batch's rows only = plain autograd over
    the whole dense model (torch's own cross-entropy, clip and SGD), to rounding."""
    task = H.load_task(tiny_cfg, 0)
    arch, client = task.arch, task.clients[2]
    params = arch.init(arch.dims, torch.Generator().manual_seed(0))
    ours = H.local_train(params, arch, client, tiny_cfg, torch.Generator().manual_seed(5))
    local = {n: p.clone().requires_grad_() for n, p in params.items()}
    opt = torch.optim.SGD(local.values(), lr=tiny_cfg.lr)
    for x, y in H.batches(client.train, tiny_cfg.batch_size, torch.Generator().manual_seed(5)):
        logits = arch.forward(local, x)
        opt.zero_grad()
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(local.values(), tiny_cfg.clip)
        opt.step()
    for n in params:
        assert torch.allclose(ours[n], local[n], atol=1e-5), n


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


def test_client_randomness_depends_only_on_seed_round_client():
    a_np, a_t = H.client_generators(3, 4, 5)
    b_np, b_t = H.client_generators(3, 4, 5)
    assert a_np.random() == b_np.random() and torch.equal(torch.randperm(50, generator=a_t),
                                                          torch.randperm(50, generator=b_t))
    c_np, _ = H.client_generators(3, 4, 6)
    assert H.client_generators(3, 4, 5)[0].random() != c_np.random()


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


def test_aggregation_protocols_hand_computed():
    arch = H.cnn_arch(2, 2, 2)
    old = {n: torch.full_like(v, 7.0) for n, v in arch.init(arch.dims, torch.Generator()).items()}
    full = {d: torch.arange(2) for d in arch.dims}
    half = {d: torch.tensor([0]) for d in arch.dims}
    a = {n: torch.full_like(v, 1.0) for n, v in old.items()}                          # n = 1, full width
    b = {n: torch.full_like(v, 4.0) for n, v in H.extract(old, arch, half).items()}  # n = 3, unit 0
    sel = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)], "selective")
    assert sel["conv1_b"].tolist() == [3.25, 1.0]          # unit 1: client a alone
    fed = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)], "full")
    assert fed["conv1_b"].tolist() == [3.25, (1 * 1 + 3 * 7) / 4]  # b counts unit 1 with the value sent (7)
    with pytest.raises(ValueError, match="valid names: full, selective"):
        H.aggregate(old, arch, [(a, full, 1.0)], "mean")
    # official HeteroFL / FedRolex weighting: each client counted once per element
    sel = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)], "selective", "count")
    assert sel["conv1_b"].tolist() == [(1 + 4) / 2, 1.0]
    fed = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)], "full", "count")
    assert fed["conv1_b"].tolist() == [(1 + 4) / 2, (1 + 7) / 2]
    with pytest.raises(ValueError, match="valid names: n_k, count"):
        H.aggregate(old, arch, [(a, full, 1.0)], "full", "sqrt")


def test_both_protocols_reduce_to_fedavg_at_full_width():
    arch = H.lstm_arch(5, 4, 4)
    g = torch.Generator().manual_seed(1)
    old = arch.init(arch.dims, g)
    full = {d: torch.arange(n) for d, n in arch.dims.items()}
    clients = [(arch.init(arch.dims, g), full, w) for w in (10.0, 30.0, 60.0)]
    for protocol in ("full", "selective"):
        new = H.aggregate(old, arch, clients, protocol)
        for name in old:
            assert torch.allclose(new[name], sum(w * p[name] for p, _, w in clients) / 100.0, atol=1e-6)


def test_aggregation_does_not_depend_on_reply_order():
    arch = H.lstm_arch(6, 8, 8)
    g = torch.Generator().manual_seed(2)
    old = arch.init(arch.dims, g)
    ups = []
    for k, w in enumerate((0.25, 0.5, 1.0, 0.75)):
        idx = H.client_indices("random", arch, w, 0, np.random.default_rng(k))
        sub = H.extract(old, arch, idx)
        ups.append(({n: torch.randn(v.shape, generator=g) for n, v in sub.items()}, idx, 10.0 + k))
    for protocol in ("full", "selective"):
        ref = H.aggregate(old, arch, ups, protocol)
        for perm in ([3, 1, 0, 2], [2, 3, 1, 0]):
            other = H.aggregate(old, arch, [ups[i] for i in perm], protocol)
            assert all(torch.equal(ref[n], other[n]) for n in ref)


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


def test_summaries_tail_is_lowest_quarter():
    s = H.summarize_accuracies([0.5, 0.1, 0.3, 0.2, 0.4, 0.6, 0.7])  # K = 7 -> tail of 2
    assert s["worst"] == 0.1 and s["tail"] == pytest.approx(0.15) and s["mean"] == pytest.approx(0.4)


def test_row_masking_averages_each_vocabulary_row_over_its_holders_hand_computed():
    """3 output classes: client a holds classes {0, 1}, client b {1}; nobody holds class 2."""
    arch = H.cnn_arch(1, 1, 1, classes=3)
    old = {n: torch.full_like(v, 7.0) for n, v in arch.init(arch.dims, torch.Generator()).items()}
    full = {d: torch.arange(1) for d in arch.dims}
    a = {n: torch.full_like(v, 1.0) for n, v in old.items()}
    b = {n: torch.full_like(v, 4.0) for n, v in old.items()}
    rows = lambda *held: {"fc2_w": torch.tensor(held), "fc2_b": torch.tensor(held)}  # noqa: E731
    held = [rows(True, True, False), rows(False, True, False)]
    for protocol in ("selective", "full"):
        new = H.aggregate(old, arch, [(a, full, 1.0), (b, full, 3.0)], protocol, held=held)
        assert new["fc2_b"].tolist() == [1.0, (1 * 1 + 3 * 4) / 4, 7.0]  # row 2 keeps its value
        assert new["conv1_b"].tolist() == [(1 * 1 + 3 * 4) / 4]          # other tensors: no masking
    count = H.aggregate(old, arch, [(a, full, 1.0), (b, full, 3.0)], "selective", "count", held)
    assert count["fc2_w"][:, 0].tolist() == [1.0, 2.5, 7.0]


def test_row_masking_under_full_counts_an_untrained_unit_of_a_holder_with_the_value_sent():
    arch = H.cnn_arch(2, 2, 2, classes=2)
    old = {n: torch.full_like(v, 7.0) for n, v in arch.init(arch.dims, torch.Generator()).items()}
    full, half = {d: torch.arange(2) for d in arch.dims}, {d: torch.tensor([0]) for d in arch.dims}
    a = {n: torch.full_like(v, 1.0) for n, v in old.items()}
    b = {n: torch.full_like(v, 4.0) for n, v in H.extract(old, arch, half).items()}
    held = [{"fc2_w": torch.tensor([True, True]), "fc2_b": torch.tensor([True, True])},
            {"fc2_w": torch.tensor([False, True]), "fc2_b": torch.tensor([False, True])}]
    new = H.aggregate(old, arch, [(a, full, 1.0), (b, half, 3.0)], "full", held=held)
    # fc2_w[:, fc unit 1]: class 0 held by a only -> 1; class 1 by both, b did not train unit 1 -> (1 + 3*7)/4
    assert new["fc2_w"][:, 1].tolist() == [1.0, (1 + 3 * 7) / 4]


def test_row_masking_zeroes_the_logits_of_absent_classes_in_local_training(tiny_cfg):
    cfg = tiny_cfg.replace(row_masking=True)
    task = H.load_task(cfg, 0)
    arch, client = task.arch, task.clients[-1]
    params = arch.init(arch.dims, torch.Generator().manual_seed(0))
    out = H.local_train(params, arch, client, cfg, torch.Generator().manual_seed(1))
    absent = torch.from_numpy(client.label_counts == 0)
    assert absent.any()
    assert torch.equal(out["dec_w"][absent], params["dec_w"][absent])   # no gradient reaches them
    assert torch.equal(out["dec_b"][absent], params["dec_b"][absent])
    plain = H.local_train(params, arch, client, tiny_cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(plain["dec_b"][absent], params["dec_b"][absent])


@pytest.mark.parametrize("width", [0.25, 0.315, 0.5, 0.631, 0.8, 1.0])
def test_fjord_training_draws_on_average_the_width_the_budget_counts(width, monkeypatch):
    """>= 10,000 batch widths drawn through local_train's draw; their mean is expected_width."""
    levels = (0.25, 0.5, 0.75, 1.0)
    allowed = H.fjord_widths(width, levels)
    assert allowed == [lv for lv in levels if lv <= H.fjord_max_width(width, levels)]
    assert len(set(allowed)) == len(allowed)
    gen = torch.Generator().manual_seed(0)
    draws = [H.fjord_draw(allowed, gen) for _ in range(12_000)]
    assert np.mean(draws) == pytest.approx(H.expected_width(width, "ordered", levels), abs=5e-3)
    assert round(float(np.mean(draws)), 2) == round(H.expected_width(width, "ordered", levels), 2)
    seen = []
    real = H.fjord_draw
    monkeypatch.setattr(H, "fjord_draw", lambda w, g: seen.append(tuple(w)) or real(w, g))
    H.train_subnet(*_fjord_subnet_job(width))
    assert seen and set(seen) == {tuple(allowed)}  # the training path draws from exactly these


def _fjord_subnet_job(width):
    cfg = smoke(policy="hasa", extraction="ordered", max_examples_per_client=20, emb_dim=8, hidden_dim=8)
    task = H.load_task(cfg, 0)
    idx = H.subnet_indices(task.arch, cfg, width, 0, 0, 0)
    params = task.arch.init(task.arch.dims, torch.Generator().manual_seed(0))
    return H.extract(params, task.arch, idx), task.arch, task.clients[0], cfg, width, 0, 0, 0


def test_no_unit_of_a_fjord_clients_evaluation_slice_stays_untrained():
    cfg = smoke(policy="hasa", extraction="ordered", aggregation="selective", rounds=3, max_examples_per_client=40,
                emb_dim=16, hidden_dim=16)
    rec = H.run(cfg, 0)
    widest = max(rec["widths"])
    assert all(w in cfg.levels for w in rec["widths"])  # every maximum width is a level
    for e in rec["movement"]:
        if e["param"] in ("w_ih", "embed") and e["axis"] in (0, 1):
            used = H.units_of(widest, len(e["norm"]))
            assert min(e["norm"][:used]) > 0, f"{e['param']} axis {e['axis']}: a unit below {widest} never trained"


def test_nested_prefix_views_equal_the_gathered_slice_values_and_gradients():
    arch = H.lstm_arch(7, 8, 8)
    params = {n: p.requires_grad_(True) for n, p in arch.init(arch.dims, torch.Generator().manual_seed(0)).items()}
    keep = {"emb": 3, "hid": 5}
    viewed = H.nested_prefix(params, arch, keep, arch.dims)
    gathered = H.extract(params, arch, {d: torch.arange(k) for d, k in keep.items()})
    for n in params:
        assert torch.equal(viewed[n], gathered[n])
    x = torch.randint(7, (4, 6))
    ga = torch.autograd.grad(arch.forward(viewed, x).square().sum(), list(params.values()))
    gb = torch.autograd.grad(arch.forward(gathered, x).square().sum(), list(params.values()))
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


def test_qffl_aggregation_hand_computed():
    """One parameter of 2 elements, two clients at full width, lr 0.5. Sent theta = (1, 1); client a
    returns (0, 1) with loss 1, client b returns (1, 3) with loss 4. Delta_a = (2, 0), Delta_b =
    (0, -4) (= (sent - local) / lr). q = 1: h_a = 1 * 1^0 * 4 + 1 / 0.5 = 6, h_b = 1 * 16 + 4 / 0.5 = 24;
    theta_new = theta - (1 * Delta_a + 4 * Delta_b) / (6 + 24) = (1 - 2/30, 1 + 16/30). q = 0 is the
    unweighted mean of the local models: (0.5, 2)."""
    arch = H.Architecture("toy", {"d": 2}, {"w": (H.Axis("d"),)}, None, None, None, ("w", "w"))
    full = {"d": torch.arange(2)}
    sent = {"w": torch.tensor([1.0, 1.0])}
    updates = [({"w": torch.tensor([0.0, 1.0])}, full, 10.0), ({"w": torch.tensor([1.0, 3.0])}, full, 99.0)]
    cfg = H.config("smoke", lr=0.5, q=1.0)
    new = H.qffl_aggregate(sent, arch, updates, [1.0, 4.0], cfg)["w"]
    assert new.tolist() == pytest.approx([1 - 2 / 30, 1 + 16 / 30], abs=1e-6)
    assert H.qffl_aggregate(sent, arch, updates, [1.0, 4.0], cfg.replace(q=0.0))["w"].tolist() == \
        pytest.approx([0.5, 2.0], abs=1e-6)


def test_fjord_self_distillation_is_counted_in_the_budget():
    """With distillation a client trains its widest slice on every batch as well: its expected
    width is p_max + the mean of its levels, so at B = 0.5 uniform FjORD drops to p_max = 1/4."""
    lv = (0.25, 0.5, 0.75, 1.0)
    assert H.expected_width(0.75, "ordered", lv, distill=True) == pytest.approx(0.75 + 0.5)
    cfg = smoke(extraction="ordered", distill=True)
    p = H.plan(cfg, H.load_task(cfg, 0), 0)
    assert set(p["widths"]) == {0.25} and p["budget_frac"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="distill .* needs extraction 'ordered'"):
        smoke(distill=True)


def test_validation_holds_out_training_titles_and_never_reads_the_test_titles():
    """validation=True: each client's evaluation titles are a held-out part of its training
    titles; its training titles are the rest; no test title appears in either."""
    cfg = smoke()
    plain, held = H.medium_splits(cfg, 0), H.medium_splits(cfg.replace(validation=True), 0)
    for name, (train, test) in plain.items():
        v_train, v_eval = held[name]
        as_set = lambda titles: {tuple(t) for t in titles}  # noqa: E731
        assert as_set(v_train) | as_set(v_eval) <= as_set(train) and not as_set(v_eval) & as_set(v_train)
        assert len(v_train) + len(v_eval) == len(train)
    with pytest.raises(ValueError, match="validation .* is for benchmark 'medium'"):
        H.config("smoke", "digits", validation=True)
