"""The bench: the targets arithmetic of Flower against the in-process engine (hand-computed), the
link-state clock and the memory sampler."""
import numpy as np
import pandas as pd
import pytest

import hasa_bench as B


def _measures(**flower):
    base = {"seconds per round (median)": 0.5, "wall seconds of the training rounds": 10.0,
            "peak PSS MiB (all processes)": 1000.0, "wall seconds": 14.0, "peak RSS MiB (all processes)": 1100.0}
    return pd.DataFrame([base, {**base, **flower}], index=["in-process", "flower"])


def test_scale_targets_say_which_target_is_met_and_by_how_much_one_is_missed():
    t = B.scale_targets(_measures(**{"seconds per round (median)": 0.7, "wall seconds of the training rounds": 25.0,
                                     "peak PSS MiB (all processes)": 1500.0}))
    assert list(t.index) == list(B.SCALE_TARGETS)
    assert t["met"].tolist() == [True, False, True]
    assert t.loc["wall seconds of the training rounds", "flower / in-process"] == pytest.approx(2.5)
    assert t.loc["wall seconds of the training rounds", "over target %"] == pytest.approx(25.0)
    assert t.loc["seconds per round (median)", "over target %"] == 0.0


def test_before_after_gives_the_targets_then_the_totals_without_a_target():
    before = _measures(**{"seconds per round (median)": 1.5, "wall seconds": 70.0,
                          "peak RSS MiB (all processes)": 3300.0})
    after = _measures(**{"seconds per round (median)": 0.6, "wall seconds": 35.0,
                         "peak PSS MiB (all processes)": 2500.0})
    c = B.before_after(before, after)
    assert list(c.index) == [*B.SCALE_TARGETS, *B.SCALE_ALSO]
    assert c.loc["seconds per round (median)", ["ratio before", "ratio after"]].tolist() == pytest.approx([3.0, 1.2])
    assert c.loc["seconds per round (median)", "met after"] is True
    assert c.loc["peak PSS MiB (all processes)", "over target % after"] == pytest.approx(25.0)
    assert c.loc["wall seconds", "ratio before"] == pytest.approx(5.0) and np.isnan(c.loc["wall seconds", "target"])
    assert pd.isna(c.loc["peak RSS MiB (all processes)", "met after"])


@pytest.mark.parametrize("indexed", [False, True])
def test_the_link_state_clock_counts_each_call_once(indexed):
    """The indexed link state's methods call flwr's (super()): the clock still counts one call each."""
    pytest.importorskip("flwr")
    with B.link_state_clock() as clock:
        cycle = B.link_state_cycle(num_nodes=40, held=8, indexed=indexed, cycles=3)
    assert cycle["indexed"] is indexed
    assert clock["get_message_ins"][0] == 3 * 40 and clock["store_message_ins"][0] == 8
    assert clock["get_message_ins"][1] > 0


def test_the_sampler_gives_rss_and_pss():
    pytest.importorskip("psutil")
    with B.ResourceSampler(interval=0.05, pss_interval=0.1) as res:
        block = np.ones(50 * 2 ** 20 // 8)  # 50 MiB, touched
    del block
    assert 50 < res.peak_pss_mib <= res.peak_rss_mib * 1.01
    assert res.peak_pss_by_role["driver"] == pytest.approx(res.peak_pss_mib)


def test_link_state_before_after_per_call_and_per_message():
    calls = {"get_message_ins": (1000, 2.0), "get_message_res": (10, 0.5), "store_message_ins": (100, 0.1),
             "store_message_res": (100, 0.2)}
    overhead = {"messages": 100, **{f"flwr link state: {m}, calls": n for m, (n, s) in calls.items()},
                **{f"flwr link state: {m}, seconds": s / 10 for m, (n, s) in calls.items()}}
    before = pd.Series({**{f"flwr link state: {m}, calls": n for m, (n, s) in calls.items()},
                        **{f"flwr link state: {m}, seconds": s for m, (n, s) in calls.items()}})
    t = B.link_state_before_after(before, overhead)
    assert t.loc["get_message_ins", "ms per message before"] == pytest.approx(20.0)
    assert t.loc["get_message_ins", "ms per message after"] == pytest.approx(2.0)
    assert t.loc["get_message_res", "ms per call before"] == pytest.approx(50.0)
    assert t["before / after (seconds)"].tolist() == pytest.approx([10.0] * 4)
    assert "calls before" not in B.link_state_before_after(None, overhead).columns


def test_disk_use_follows_links_to_files_and_folders(tmp_path):
    """1 MiB file + a linked folder holding 2 MiB + a link to that same 2 MiB file = 3 MiB (a file
    reached by two paths counts once); a file alone is its own size."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.bin").write_bytes(b"\0" * 2 * 2 ** 20)
    d = tmp_path / "d"
    d.mkdir()
    (d / "b.bin").write_bytes(b"\0" * 2 ** 20)
    (d / "linked_folder").symlink_to(real, target_is_directory=True)
    (d / "linked_file").symlink_to(real / "a.bin")
    assert B._mib(d) == 3.0
    assert B._mib(d / "b.bin") == 1.0
