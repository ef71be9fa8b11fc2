"""The bench: the targets arithmetic of Flower against the in-process engine (hand-computed)."""
import pytest

import hasa_bench as B


def test_scale_targets_say_which_target_is_met_and_by_how_much_one_is_missed():
    import pandas as pd
    measures = pd.DataFrame({"seconds per round (median)": [0.5, 0.7], "wall seconds": [10.0, 25.0],
                             "peak RSS MiB (all processes)": [1000.0, 1500.0]}, index=["in-process", "flower"])
    t = B.scale_targets(measures)
    assert t["met"].tolist() == [True, False, True]
    assert t.loc["wall seconds", "flower / in-process"] == pytest.approx(2.5)
    assert t.loc["wall seconds", "over target %"] == pytest.approx(25.0)
    assert t.loc["seconds per round (median)", "over target %"] == 0.0
