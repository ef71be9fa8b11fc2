"""The analysis plan: declared primaries, the verdict scheme and the family's simultaneous intervals,
pinned against hand-computed cases."""
import pandas as pd
import pytest

import hasa_core as H
import hasa_results as R


def test_the_plan_declares_two_primaries_per_claim_and_protocol_from_the_experiments():
    assert len(R.PRIMARIES) == 16
    cells = {(p.claim, p.protocol) for p in R.PRIMARIES}
    assert cells == {(c, pr) for c in "1234" for pr in ("full", "selective")}
    assert all(sum(1 for p in R.PRIMARIES if (p.claim, p.protocol) == cell) == 2 for cell in cells)
    methods = {name: set(R.experiments("paper")[name][0]) for name in ("claims", "claim4")}
    for p in R.PRIMARIES:
        if p.kind == "paired":
            assert {p.treatment, *p.controls} <= methods[p.experiment], p.test
    two = [p for p in R.PRIMARIES if p.claim == "2"]
    assert all(len(p.controls) == 4 for p in two)  # HeteroFL (uniform), FedRolex, Federated Dropout, FjORD
    assert {c for p in two if p.protocol == "selective" for c in p.controls} >= {"uniform·FedDropout·sel"}


@pytest.mark.parametrize("low, high, expected", [
    (0.1, 0.9, "reproduced"), (0.6, 1.2, "reproduced"), (0.1, 0.3, "smaller than claimed"),
    (-0.2, 0.3, "not reproduced"), (-0.9, -0.1, "contradicted"), (-0.2, 0.8, "inconclusive")])
def test_the_verdict_states_sign_and_size_against_the_effect(low, high, expected):
    assert R.verdict(low, high, 0.5) == expected


def test_simultaneous_intervals_agree_with_the_bonferroni_p():
    """d = (1, 2, 3): mean 2, sd 1, n 3. Alone (m = 1): CI 2 -+ t(.975, 2) / sqrt 3 = [-0.484, 4.484],
    p = 2 P(T_2 > 2 sqrt 3) = 0.0742. In a family of 16 the adjusted p is 1 and the interval wider."""
    one = R.simultaneous([1, 2, 3], 0.5, m=1)
    assert one["ci_low"] == pytest.approx(-0.4841, abs=1e-4) and one["ci_high"] == pytest.approx(4.4841, abs=1e-4)
    assert one["p_unadjusted"] == pytest.approx(0.0742, abs=1e-4) and one["p_adjusted"] == one["p_unadjusted"]
    sixteen = R.simultaneous([1, 2, 3], 0.5, m=16)
    assert sixteen["p_adjusted"] == 1.0 and sixteen["ci_low"] < one["ci_low"]
    for d in ([0.3, 0.5, 0.4, 0.6, 0.2], [0.3, 0.1, -0.2, 0.4, 0.0]):  # CI excludes 0 <=> adjusted p < 0.05
        s = R.simultaneous(d, 0.5, m=4)
        assert (s["ci_low"] > 0) == (s["p_adjusted"] < 0.05)


def test_a_claims_verdict_is_the_worse_of_its_two_tests():
    assert R.claim_verdict(["reproduced", "inconclusive"]) == "inconclusive"
    assert R.claim_verdict(["smaller than claimed", "reproduced"]) == "smaller than claimed"
    assert R.claim_verdict(["not reproduced", "inconclusive"]) == "not reproduced"
    assert R.claim_verdict(["reproduced", "contradicted"]) == "contradicted"


def test_the_second_benchmark_repeats_claims_1_and_3_on_both_shakespeare_federations():
    assert len(R.SECOND_BENCHMARK) == 16
    assert {(p.claim, p.protocol, p.experiment) for p in R.SECOND_BENCHMARK} == {
        (c, pr, e) for c in "13" for pr in ("full", "selective") for e in ("shakespeare", "shakespeare_leaf")}
    for p in R.SECOND_BENCHMARK:
        assert {p.treatment, *p.controls} <= set(R.experiments("paper")[p.experiment][0]), p.test
        twin = next(q for q in R.PRIMARIES if (q.claim, q.protocol, q.metric) == (p.claim, p.protocol, p.metric))
        assert p.effect == twin.effect and p.treatment.startswith(twin.treatment) and len(p.controls) == 1
    leaf = [p for p in R.SECOND_BENCHMARK if p.experiment == "shakespeare_leaf"]
    assert {p.controls[0] for p in leaf if p.claim == "1"} == {"uniform (LEAF roles, 10%/round)"}


def _planned_rows(plan) -> pd.DataFrame:
    return pd.DataFrame([{"claim": p.claim, "protocol": p.protocol, "metric": p.metric, "test": p.test,
                          "comparison": p.test.rsplit(", ", 2)[0], "diff": 0.3, "ci_low": 0.1, "ci_high": 0.6,
                          "p_adjusted": 0.01, "mde80": 0.2, "n": 30, "verdict": "reproduced"} for p in plan])


def test_verdicts_refuse_a_test_the_plan_does_not_name():
    rows = _planned_rows(R.PRIMARIES)
    assert len(R.claim_verdicts(rows)) == 8
    swapped = rows.copy()
    swapped.loc[4, "test"] = "reverse − uniform, mean, full"  # claim 3's secondary in place of a primary
    with pytest.raises(ValueError, match=r"not in the plan \['reverse − uniform, mean, full'\]"):
        R.claim_verdicts(swapped)
    with pytest.raises(ValueError, match="declared but missing"):
        R.claim_verdicts(rows.drop(index=0))
    with pytest.raises(ValueError, match="given twice"):
        R.claim_verdicts(pd.concat([rows, rows.iloc[[0]]]))


def test_the_committed_headline_comes_from_exactly_the_planned_primaries():
    """results/claims_primary.csv holds the plan's 16 tests in its order, and each committed verdict
    is the worse of its cell's two primaries."""
    committed = pd.read_csv(H.REPO / "results" / "claims_primary.csv", dtype={"claim": str})
    assert committed["test"].tolist() == [p.test for p in R.PRIMARIES]
    verdicts = pd.read_csv(H.REPO / "results" / "claims_verdicts.csv", dtype={"claim": str})
    expected = R.claim_verdicts(committed)
    assert verdicts[["claim", "protocol", "verdict"]].equals(expected[["claim", "protocol", "verdict"]])
