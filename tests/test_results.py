"""The study module: experiments and labels, paired statistics, Holm families, power, score
validity, outputs, README and report."""
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import hasa_core as H
import hasa_results as R


def test_paired_stats_match_scipy_with_a_t_interval_power_and_mde():
    a = np.array([14.1, 14.5, 13.9, 14.8, 14.2, 14.0, 14.6, 14.3, 14.4, 14.7])
    b = np.array([13.8, 14.0, 13.7, 14.1, 13.9, 14.1, 14.0, 13.6, 13.8, 14.2])
    s = R.paired_stats(a, b, effect=0.5)
    assert s["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert s["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    d = a - b
    assert s["diff"] == pytest.approx(d.mean())
    assert s["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert s["wins"] == 9
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / np.sqrt(10)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert R.power_paired_t(s["mde80"], s["sd_diff"], 10) == pytest.approx(0.8, abs=1e-6)
    # sd 0.8 pp, 10 seeds -> about 42% power for +0.50 pp
    assert R.power_paired_t(0.5, 0.8, 10) == pytest.approx(0.42, abs=0.01)
    n80 = R.seeds_for_power(0.5, 0.8)
    assert R.power_paired_t(0.5, 0.8, n80) >= 0.8 > R.power_paired_t(0.5, 0.8, n80 - 1)


def test_holm_adjustment():
    assert R.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_compare_family_adjusts_within_its_family_only():
    rng = np.random.default_rng(0)
    df = pd.DataFrame([{"method": m, "seed": s, "mean": rng.normal(10 + (m == "a"), 1), "worst": rng.normal(5, 1),
                        "tail": rng.normal(6, 1)} for m in ("a", "b", "c") for s in range(8)])
    fam = R.compare_family(df, [("a", "b"), ("a", "c")], "F")
    assert set(fam["family"]) == {"F"} and len(fam) == 6
    assert fam["p_holm"].tolist() == pytest.approx(R.holm(fam["p_t"]).tolist())
    one = R.compare_family(df, [("a", "b")], "G")
    assert one["p_holm"].tolist() == pytest.approx(R.holm(one["p_t"]).tolist())
    assert all(v.startswith(("higher", "lower", "neither")) for v in fam["verdict"])


def test_score_validity_permutes_clients():
    clients = [f"c{i}" for i in range(5)]
    rows = [{"seed": s, "client": c, "n_train": 10 * (i + 1), "good": float(i), "bad": float((i * 3) % 5)}
            for s in range(3) for i, c in enumerate(clients)]
    scores = pd.DataFrame(rows)
    need = pd.DataFrame([{"seed": s, "client": c, "need": float(i) + 0.1 * s}
                         for s in range(3) for i, c in enumerate(clients)])
    v = R.score_validity(scores, need, ["good", "bad"])
    assert v.loc["good", "rho_need"] == pytest.approx(1.0)
    assert v.loc["good", "p_perm"] == pytest.approx(2 / 120)  # identity and reversal out of 5! permutations
    assert v.loc["good", "permutations"] == 120 and v.loc["bad", "p_perm"] > 0.1


def test_one_common_width_makes_both_protocols_the_same_computation(tiny_cfg):
    for extraction in ("static", "rolling"):
        cfg = tiny_cfg.replace(extraction=extraction)
        full = H.run(cfg.replace(aggregation="full"), 0)
        sel = H.run(cfg.replace(aggregation="selective"), 0)
        assert full["params_sha256"] == sel["params_sha256"]
        assert R.canonical(cfg.replace(aggregation="selective")).aggregation == "full"
    assert R.canonical(tiny_cfg.replace(extraction="random", aggregation="selective")).aggregation == "selective"


def test_experiments_give_one_name_per_run():
    for profile in ("paper", "smoke"):
        names, keys = {}, {}
        for methods, _ in R.experiments(profile).values():
            for label, cfg in methods.items():
                assert names.setdefault(cfg.key(), label) == label
                assert keys.setdefault((cfg.benchmark, label), cfg.key()) == cfg.key()
    methods, seeds = R.experiments("paper")["core"]
    assert len(seeds) == 30 and set(methods) == {"uniform", "hasa", "reverse"}


def test_where_the_gain_comes_from_helpers():
    rows = []
    for s in range(4):
        for i, c in enumerate(["big", "mid", "small"]):
            for m, bump in (("u", 0.0), ("h", 3.0 if c == "small" else 0.0)):
                rows.append({"method": m, "seed": s, "client": c, "accuracy": 10 + i + bump + 0.1 * s * (m == "h"),
                             "width": 0.5, "n_train": 100 // (i + 1)})
    cdf = pd.DataFrame(rows)
    per = R.per_client_differences(cdf, "h", "u", "F")
    assert per.index.tolist() == ["big", "mid", "small"] and per.loc["small", "diff"] == pytest.approx(3.15)
    n_test = pd.DataFrame([{"seed": s, "client": c, "n_test": n}
                           for s in range(4) for c, n in (("big", 80), ("mid", 15), ("small", 5))])
    var = R.mean_variants(cdf, n_test, "h", "u")
    assert var.loc["all clients, unweighted", "diff"] == pytest.approx((3 + 3 * 0.15) / 3)
    assert var.loc["without small", "diff"] == pytest.approx(0.15 * 2 / 2)
    assert var.loc["all clients, weighted by test targets", "diff"] == pytest.approx(0.15 + 3 * 5 / 100)


def test_non_paper_profiles_never_write_committed_outputs():
    res, fig = R.output_dirs("smoke")
    assert res == H.DEFAULT_RESULTS_DIR / "smoke" and fig.is_relative_to(res)
    assert R.output_dirs("paper") == (H.DEFAULT_RESULTS_DIR, H.REPO / "figures")
    dry = subprocess.run(["make", "-n", "reproduce", "PROFILE=smoke"], cwd=H.REPO, capture_output=True,
                         text=True).stdout
    assert "results/smoke/notebooks" in dry and " results/notebooks/" not in dry
    assert ".partial.ipynb" in dry  # executed into a temporary name, renamed only on success


def test_readme_blocks_are_filled_from_results_and_a_missing_table_is_named(tmp_path):
    (tmp_path / "t1.md").write_text("| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- table: t1 -->\nold\n<!-- end table -->\n<!-- text: engine -->\n<!-- end text -->\n")
    assert R.update_readme(readme, tmp_path) == ["table:t1", "text:engine"]
    assert readme.read_text() == ("x\n<!-- table: t1 -->\n| a |\n|---|\n| 1 |\n<!-- end table -->\n"
                                  f"<!-- text: engine -->\n{R.engine_text(tmp_path)}\n<!-- end text -->\n")
    readme.write_text("<!-- table: absent -->\n<!-- end table -->\n")
    with pytest.raises(FileNotFoundError, match="absent"):
        R.update_readme(readme, tmp_path)


def test_numbers_typed_by_hand_are_found_outside_generated_blocks_only():
    text = ("HASA (arXiv 2606.07621) gains 0.50 pp, or 3 %; run `make test` with `budget=0.5`.\n"
            "<!-- table: t -->\n| 1.25 |\n<!-- end table -->\n7 clients, 30 rounds, Eq. 16.\n")
    assert R.typed_numbers(text) == ["0.50 pp", "3 %"]


def test_report_check_passes_on_the_committed_results_and_fails_on_an_edited_table(tmp_path):
    """The committed README and REPORT match results/; editing one number of a committed table
    makes the check name the stale block and the stale report."""
    assert R.check_report() == []
    import shutil
    results = tmp_path / "results"
    shutil.copytree(H.DEFAULT_RESULTS_DIR, results, ignore=shutil.ignore_patterns("runs", "engine1", "flower", "smoke"))
    table = results / "table1_main.md"
    table.write_text(table.read_text().replace("|", "| 0.01 ", 1))
    problems = R.check_report(results, H.REPO / "README.md")
    assert any("table1_main" in p for p in problems) and any("REPORT.md" in p for p in problems)


def test_say_puts_a_paired_test_into_words():
    t = pd.DataFrame([{"comparison": "a − b", "metric": "mean", "diff": 0.5, "ci_low": 0.1, "ci_high": 0.9,
                       "p_holm": 0.01, "family": "F", "n": 10, "power_at_effect": 0.9, "mde80": 0.3, "wins": 8,
                       "verdict": "higher"}])
    assert R.say(t, "a − b") == "+0.50 pp (95% CI [+0.10, +0.90], Holm p = 0.01)"
    assert R.say(t, "a − b", ci=False, family=True) == "+0.50 pp (Holm p = 0.01 in family 'F')"
    assert R.say(t, "a − b", wins=True, verdict=True).endswith("wins 8, MDE80 = 0.30 pp): higher")


def test_precompute_refuses_an_unknown_experiment_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment.*nonsense.*valid names: table1, core"):
        R.precompute("smoke", 1, tmp_path, only=["nonsense"])
