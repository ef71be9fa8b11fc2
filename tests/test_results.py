"""The study module: experiments and labels, paired statistics, Holm families, power, score
validity, outputs, README and report."""
import importlib
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import hasa_core as H
import hasa_records as HR
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


@pytest.mark.parametrize("n", [5, 8, 10])
def test_sign_flip_p_of_constant_positive_differences_is_one_over_two_to_the_n(n):
    assert R.sign_flip_p(np.full(n, 0.3), "greater") == 1 / 2 ** n
    assert R.sign_flip_p(np.full(n, 0.3)) == 2 / 2 ** n
    assert R.sign_flip_p([1.0, -1.0, 2.0, -2.0]) == 1.0  # every sign vector is at least as extreme as 0


def test_joint_sign_flip_on_known_cases():
    rng = np.random.default_rng(0)
    shifted = rng.normal(0, 0.1, (8, 5)) - 1.0  # every specification clearly negative
    j = R.joint_sign_flip(shifted)
    assert (j["specifications"], j["seeds"], j["sign_vectors"]) == (5, 8, 256)
    assert j["significant_negative"] == 5 and j["significant_positive"] == 0
    assert j["p_median"] == 2 / 2 ** 8  # only the identity and its mirror are as extreme
    assert 1 / 2 ** 8 <= j["p_negative"] < 0.05  # flipping a seed or two keeps some specifications significant
    assert j["median"] == pytest.approx(np.median(shifted.mean(axis=0)))
    # under the null, chance gives about 2.5 % of specifications significant in each direction
    noise = R.joint_sign_flip(rng.normal(0, 1, (10, 200)))
    assert 2 < noise["chance_negative"] < 8 and noise["chance_negative"] == pytest.approx(noise["chance_positive"])


def _spec_curve_frame():
    """Two specifications x 3 methods x 8 seeds x rounds 5, 10: hasa is 1 pp below uniform
    everywhere (plus seed noise), hasa·sel 0.5 pp above at round 10 only."""
    rows = []
    for spec, level in (("default", 14.0), ("lr 2.0", 12.0)):
        for seed in range(8):
            for rnd in (5, 10):
                u = level - (10 - rnd) * 0.3 + 0.1 * seed
                for method, value in (("uniform", u), ("hasa", u - 1 + 0.01 * seed),
                                      ("hasa·sel", u + (0.5 + 0.02 * seed if rnd == 10 else 0))):
                    rows.append({"spec": spec, "method": method, "seed": seed, "round": rnd, "mean": value,
                                 "final": rnd == 10})
    return pd.DataFrame(rows)


def test_spec_curve_table_calibrates_on_uniform_and_adjusts_per_protocol():
    f = _spec_curve_frame()
    assert R.calibrated_round(f[f["spec"] == "default"], target=13.82) == 10   # uniform 14.35 vs 12.85
    assert R.calibrated_round(f[f["spec"] == "lr 2.0"], target=13.82) == 10    # 12.35 vs 10.85
    assert R.calibrated_round(f[f["spec"] == "lr 2.0"], target=10.5) == 5
    t = R.spec_curve_table(f).set_index(["spec", "protocol"])
    assert t.loc[("default", "full"), "diff pp"] == pytest.approx(-1 + 0.035)
    assert t.loc[("lr 2.0", "selective"), "diff pp"] == pytest.approx(0.57)
    assert set(t["family"]) == {"Specification curve (full)", "Specification curve (selective)"}
    full = t[t["family"] == "Specification curve (full)"]
    assert np.allclose(full["p_holm"], R.holm(full["p_t"]))
    assert len(t) == 4 and (t["n"] == 8).all()
    j = R.spec_joint_table(f).set_index("protocol")
    assert j.loc["full", "median"] == pytest.approx(-1 + 0.035) and j.loc["full", "significant_negative"] == 2
    sentences = R.spec_curve_sentences(t.reset_index(), j.reset_index())
    assert "robust to the setup: the effect is negative in every specification" in sentences[0]
    assert "2 specifications significantly below zero" in sentences[0]
    few = R.spec_joint_table(f[f["seed"] < 4]).set_index("protocol")  # 4 seeds: the smallest joint p is 2/16
    few_t = R.spec_curve_table(f[f["seed"] < 4])
    assert "cannot exclude chance" in R.spec_curve_sentences(few_t, few.reset_index())[0]
    assert R.spec_curve_sentences(few_t, few.reset_index(), planned=8)[0].startswith(
        "**Interim: 4 of the planned 8 seeds** (the smallest joint p that 4 seeds' sign flips can give is p = 0.12)")
    assert "Interim" not in R.spec_curve_sentences(t.reset_index(), j.reset_index(), planned=8)[0]
    assert "Across setups, under `full`: robust to the setup" in sentences[0]
    assert "duplicates counted once: none" in sentences[0]
    with pytest.raises(ValueError, match="n_seeds must be between 1 and 3"):
        R.run_experiment("spec", "smoke", n_seeds=4)


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


def test_compare_family_leaves_a_test_whose_differences_are_all_zero_out_of_the_family():
    """Worst client at 0 % for both methods in every seed: that row says so, is outside the family,
    and Holm counts the two that remain (m = 2)."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame([{"method": m, "seed": s, "mean": rng.normal(10 + (m == "a"), 1), "worst": 0.0,
                        "tail": rng.normal(6, 1)} for m in ("a", "b") for s in range(8)])
    fam = R.compare_family(df, [("a", "b")], "F").set_index("metric")
    assert fam.loc["worst", "family"] == fam.loc["worst", "verdict"] == "not tested: every paired difference is 0"
    assert list(fam.loc[["mean", "tail"], "family"]) == ["F", "F"] and fam.loc["worst", "p_holm"] == 1.0
    tested = fam.loc[["mean", "tail"]]
    low, high = sorted(tested["p_t"])
    assert sorted(tested["p_holm"]) == pytest.approx([min(1.0, 2 * low), min(1.0, max(2 * low, high))])
    assert R.say(fam.reset_index(), "a − b", "worst") == "+0.00 pp (not tested: every paired difference is 0)"


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
    assert res == HR.DEFAULT_RESULTS_DIR / "smoke" and fig.is_relative_to(res)
    assert R.output_dirs("paper") == (HR.DEFAULT_RESULTS_DIR, H.REPO / "figures")
    dry = subprocess.run(["make", "-n", "reproduce", "PROFILE=smoke"], cwd=H.REPO, capture_output=True,
                         text=True).stdout
    assert "results/smoke/notebooks" in dry and " results/notebooks/" not in dry
    assert ".partial.ipynb" in dry  # executed into a temporary name, renamed only on success


# --------------------------------------------------------------------------- staged outputs


@pytest.fixture
def scratch_repo(tmp_path, monkeypatch):
    """A scratch repository root for hasa_results (its REPO), holding one paired-test table as
    results/ of the previous complete run."""
    monkeypatch.setattr(R.outputs, "REPO", tmp_path)
    monkeypatch.delenv(R.STAGE_ENV, raising=False)
    (tmp_path / "results").mkdir()
    table = pd.DataFrame({"comparison": ["hasa − uniform"] * 2, "metric": ["mean", "worst"], "diff": [0.5, -0.25]})
    table.to_csv(tmp_path / "results" / "table1_paired_tests.csv", index=False)
    (tmp_path / "results" / "table1_paired_tests.md").write_text(R.table_markdown(table))
    return tmp_path


def test_a_staged_notebook_writes_into_its_stage_and_reads_its_own_table_first(scratch_repo, monkeypatch):
    """With HASA_STAGE set, save_table and save_figure write into the staging folder (same relative
    paths), results/ and figures/ stay as they were, and headline_table reads the staged table."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, figures = scratch_repo / "results", scratch_repo / "figures"
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    t1 = pd.read_csv(results / "table1_paired_tests.csv").set_index(["comparison", "metric"])
    t1["diff"] += 9.0
    monkeypatch.setenv(R.STAGE_ENV, "results/.stage-paper-01")
    stage = scratch_repo / "results" / ".stage-paper-01"
    assert R.save_table(t1, "table1_paired_tests", results) == stage / "results" / "table1_paired_tests.csv"
    fig, ax = plt.subplots()
    R.save_figure(fig, "01_paired", figures)
    plt.close(fig)
    assert sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()) == [
        "figures/01_paired.pdf", "figures/01_paired.png", "results/table1_paired_tests.csv",
        "results/table1_paired_tests.md"]
    assert {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()} == before and not figures.exists()
    staged_t1 = pd.read_csv(R.current(results / "table1_paired_tests.csv")).set_index(["comparison", "metric"])
    monkeypatch.delenv(R.STAGE_ENV)
    published_t1 = pd.read_csv(R.current(results / "table1_paired_tests.csv")).set_index(["comparison", "metric"])
    assert np.allclose(staged_t1["diff"], published_t1["diff"] + 9.0)


def test_publish_moves_every_staged_file_into_place_and_removes_the_stage(scratch_repo):
    stage = scratch_repo / "results" / ".stage-paper-01"
    for rel, text in [("results/table1_paired_tests.csv", "new\n"), ("results/smoke/t.md", "new smoke\n"),
                      ("figures/01_paired.png", "png\n"), ("results/.tmp-t.csv-abc", "cut short")]:
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(text)
    published = R.publish(stage)
    assert sorted(str(p.relative_to(scratch_repo)) for p in published) == [
        "figures/01_paired.png", "results/smoke/t.md", "results/table1_paired_tests.csv"]
    assert (scratch_repo / "results" / "table1_paired_tests.csv").read_text() == "new\n"
    assert (scratch_repo / "figures" / "01_paired.png").read_text() == "png\n"
    assert not stage.exists() and not (scratch_repo / "results" / ".tmp-t.csv-abc").exists()
    assert R.publish(stage) == []  # a notebook that saved nothing has no stage: nothing to publish
    with pytest.raises(ValueError, match="not a staging folder"):
        R.publish(scratch_repo / "results")
    assert (scratch_repo / "results" / "table1_paired_tests.csv").is_file()


def test_an_output_outside_the_repository_cannot_be_staged(scratch_repo, monkeypatch, tmp_path_factory):
    monkeypatch.setenv(R.STAGE_ENV, "results/.stage-paper-01")
    with pytest.raises(ValueError, match="outside the repository"):
        R.save_table(pd.DataFrame({"a": [1]}), "t", tmp_path_factory.mktemp("elsewhere"))


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
    """The committed README and REPORT match results/; editing one number of the verdicts table
    makes the check name the stale README block and the stale report."""
    assert R.check_report() == []
    import shutil
    results = tmp_path / "results"
    ignore = shutil.ignore_patterns("runs", "engine1", "flower", "smoke")
    shutil.copytree(HR.DEFAULT_RESULTS_DIR, results, ignore=ignore)
    verdicts = pd.read_csv(results / "claims_verdicts.csv")
    verdicts.loc[0, "diff 1"] += 0.01
    verdicts.to_csv(results / "claims_verdicts.csv", index=False)
    table = results / "claims_verdicts.md"
    table.write_text(table.read_text().replace("|", "| 0.01 ", 1))
    problems = R.check_report(results, H.REPO / "README.md")
    assert any("verdicts" in p for p in problems) and any("REPORT.md" in p for p in problems)


def test_say_puts_a_paired_test_into_words():
    t = pd.DataFrame([{"comparison": "a − b", "metric": "mean", "diff": 0.5, "ci_low": 0.1, "ci_high": 0.9,
                       "p_holm": 0.01, "family": "F", "n": 10, "power_at_effect": 0.9, "mde80": 0.3, "wins": 8,
                       "verdict": "higher"}])
    assert R.say(t, "a − b") == "+0.50 pp (95 % CI [+0.10, +0.90], Holm p = 0.01)"
    assert R.say(t, "a − b", ci=False, family=True) == "+0.50 pp (Holm p = 0.01 in family 'F')"
    assert R.say(t.assign(p_holm=0.00002), "a − b", ci=False) == "+0.50 pp (Holm p < 0.001)"
    assert R.say(t, "a − b", wins=True, verdict=True).endswith("wins 8, MDE80 = 0.30 pp): higher")


def test_numbers_have_one_style_and_no_e_notation():
    assert [R.pp(0.381), R.pp(-12.65), R.interval(0.197, 0.5648)] == ["+0.38 pp", "-12.7 pp", "[+0.20, +0.56]"]
    assert [R.p_value(p) for p in (2.1e-6, 0.0087, 0.086, 1.0)] == ["p < 0.001", "p = 0.0087", "p = 0.086", "p = 1"]


def test_precompute_refuses_an_unknown_experiment_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment.*nonsense.*valid names: table1, core"):
        R.precompute("smoke", 1, tmp_path, only=["nonsense"])


def test_precompute_puts_all_seeds_in_one_pool_lowest_seed_first_and_longest_run_first(tmp_path, monkeypatch):
    E = importlib.import_module("hasa_results.experiments")  # the package re-exports a function of this name
    short, long_ = H.config("smoke", rounds=2), H.config("smoke", rounds=5)
    monkeypatch.setattr(E, "experiments", lambda profile, results_dir=None: {
        "x": ({"s": short, "l": long_}, [1, 0]), "y": ({"l": long_}, [2])})
    made, calls = set(), []

    def run_pairs(pairs, n_jobs, results_dir, desc, extras, tally):
        calls.append([(c.rounds, s) for c, s in pairs])
        made.update((c.key(), s) for c, s in pairs)
    monkeypatch.setattr(E, "run_pairs", run_pairs)
    monkeypatch.setattr(E, "cached_record", lambda c, s, d: {} if (c.key(), s) in made else None)
    monkeypatch.setattr(E, "has_extras", lambda rec, extras: True)
    assert E.precompute("smoke", 2, tmp_path) == 5
    assert calls == [[(5, 0), (2, 0), (5, 1), (2, 1), (5, 2)]]  # one pool: no core waits for a seed's last run


def _mechanism_records():
    """Two clients, D = 4 hidden units, 3 seeds. uniform (B = 0.5) trains units 0-1 (movement 1);
    hasa gives client a width 1/4 and client b width 1: units 0-1 move 1, units 2-3 only 0.1."""
    recs = []
    for seed in range(3):
        for method, widths, norm, acc, capped, sweep in (
                ("uniform", [0.5, 0.5], [1.0, 1.0, 0.0, 0.0], [0.20, 0.30], [0.20, 0.30],
                 [[0.15, 0.20, 0.20, 0.20], [0.25, 0.30, 0.30, 0.30]]),
                ("hasa", [0.25, 1.0], [1.0, 1.0, 0.1, 0.1], [0.19, 0.25 - 0.01 * seed], [0.19, 0.29],
                 [[0.19, 0.19, 0.19, 0.19], [0.26, 0.28, 0.27, 0.25 - 0.01 * seed]])):
            recs.append({"method": method, "seed": seed, "clients": ["a", "b"], "widths": widths, "budget": 0.5,
                         "accuracy": acc, "accuracy_capped": capped,
                         "accuracy_sweep": {"grid": [0.25, 0.5, 0.75, 1.0], "accuracy": sweep},
                         "movement": [{"param": "w_ih", "axis": 0, "dim": "hid", "norm": norm}]})
    return recs


def test_effective_width_counts_the_trained_share_of_each_evaluation_slice():
    eff = R.effective_widths(_mechanism_records()).set_index(["method", "seed", "client"])
    assert eff.loc[("hasa", 0, "b"), "trained_share"] == 0.5          # units 2-3 moved 0.1 < 0.5 x 1
    assert eff.loc[("hasa", 0, "b"), "effective_width"] == 0.5
    assert eff.loc[("hasa", 0, "a"), "effective_width"] == 0.25       # its one unit moved fully
    assert eff.loc[("uniform", 1, "a"), "effective_width"] == 0.5
    bands = R.band_movement(R.unit_movement_frame(_mechanism_records()), [0, 0.5, 1]).set_index(["method", "units"])
    assert bands.loc[("hasa", "2–3"), "mean"] == pytest.approx(0.1) and bands.loc[("uniform", "2–3"), "mean"] == 0
    assert R.band_edges(_mechanism_records()) == [0.0, 0.25, 0.5, 1.0]


def test_narrower_evaluation_is_one_holm_family_of_recovery_and_comparison_to_uniform():
    t = R.narrower_evaluation(_mechanism_records()).set_index("comparison")
    assert list(t.index) == ["hasa: capped − allocated", "hasa capped − uniform"]
    assert t.loc["hasa: capped − allocated", "diff"] == pytest.approx(100 * (0.29 - 0.24) / 2)  # mean over clients
    assert t.loc["hasa capped − uniform", "diff"] == pytest.approx(100 * (0.48 - 0.50) / 2)
    assert (t["family"] == "Narrower evaluation").all() and np.allclose(t["p_holm"], R.holm(t["p_t"]))
    a = R.dilution_association(R.effective_widths(_mechanism_records()), "hid", n_resamples=99)
    assert a["pairs"] == 2 and a["spearman"] == pytest.approx(-1.0)  # b: effective 0.5, -6 pp; a: 0.25, -1 pp
    assert a["p_perm_within_method"] == 1.0  # one method: its two clients swapped give |rho| = 1 again


def test_dilution_index_is_the_extra_widths_movement_over_the_shared_widths():
    d = R.dilution_index(_mechanism_records()).set_index(["method", "seed"])["dilution_index"]
    assert d[("hasa", 0)] == pytest.approx(0.1)   # units 2-3 (beyond B, within w = 1) moved 0.1, units 0-1 moved 1
    assert np.isnan(d[("uniform", 0)])            # nobody is wider than B


def test_the_report_finds_every_table_a_cell_saves_even_after_a_set_index():
    src = ('R.save_table(t.set_index(["comparison", "metric"]), "table2_paired_tests", results_dir)\n'
           'x = 1\nR.save_table(w, "table2_significance_counts", results_dir)\n')
    assert R._saved_tables(src) == ["table2_paired_tests", "table2_significance_counts"]
    assert R._saved_tables("%time not python") == []


def test_the_trained_frontier_is_the_upper_edge_of_the_last_band_that_moved_enough():
    edges = [0, 0.25, 0.5, 1.0]                                        # D = 4: bands {0}, {1}, {2, 3}
    assert R.trained_frontier([1.0, 0.9, 0.4, 1.0], edges, ref=1.0) == 1.0   # band {2, 3}: mean 0.7
    assert R.trained_frontier([1.0, 0.9, 0.4, 0.4], edges, ref=1.0) == 0.5   # band {2, 3}: mean 0.4 < 0.5
    assert R.trained_frontier([1.0, 0.4, 1.0, 1.0], edges, ref=1.0) == 0.25  # a later band does not count
    assert R.trained_frontier([0.2, 1.0, 1.0, 1.0], edges, ref=1.0) == 0.0
    assert R.trained_frontier([0.2, 1.0], [0, 1.0], ref=1.0) == 1.0         # one band: mean 0.6


def test_trained_width_evaluation_cuts_each_client_to_its_well_trained_slice():
    per_client, t = R.trained_width_evaluation(_mechanism_records())
    h = per_client[per_client["method"] == "hasa"].set_index(["seed", "client"])
    assert (h["frontier"] == 0.25).all()           # hasa's band (0.25, 1]: units 1-3 moved (1 + 0.1 + 0.1) / 3 < 0.5
    assert (per_client.loc[per_client["method"] == "uniform", "frontier"] == 0.5).all()  # the control's is B
    assert h.loc[(0, "a"), "eval_width"] == 0.25 and h.loc[(0, "b"), "eval_width"] == 0.25
    assert h.loc[(1, "b"), "trained"] == pytest.approx(26.0) and h.loc[(1, "b"), "allocated"] == pytest.approx(24.0)
    t = t.set_index("comparison")
    assert list(t.index) == ["hasa: trained − allocated", "hasa trained − uniform"]
    assert t.loc["hasa: trained − allocated", "diff"] == pytest.approx(100 * (0.01 + 0.01) / 2)  # mean over seeds
    assert t.loc["hasa trained − uniform", "diff"] == pytest.approx(100 * (0.45 - 0.50) / 2)
    assert (t["family"] == "Trained-width evaluation").all() and np.allclose(t["p_holm"], R.holm(t["p_t"]))
    sweep = R.accuracy_sweep_frame(_mechanism_records())
    assert len(sweep) == 6 * 2 * 4 and sweep["accuracy"].max() == pytest.approx(30.0)


def test_the_mechanism_sentence_states_each_test_with_its_family():
    """Unit-weighted movement beyond B (hasa: units 2-3 of 4 moved 0.1), the within-method
    association, the narrower and trained-width tests and the yardstick, each with its family."""
    recs = _mechanism_records()
    recs += [{**r, "method": "hasa·sel"} for r in recs if r["method"] == "hasa"]
    extra = R.extra_width_movement(R.unit_movement_frame(recs), 0.5, 1.0)
    assert extra.loc["hasa", "mean"] == pytest.approx(0.1) and extra.loc["uniform (its trained units, within B)",
                                                                         "mean"] == pytest.approx(1.0)
    eff = R.effective_widths(recs)
    association = pd.DataFrame([{"dim": "hid", **R.dilution_association(eff, "hid", n_resamples=99)}])
    narrower, (_, trained) = R.narrower_evaluation(recs), R.trained_width_evaluation(recs)
    uniform_small = [{**r, "method": "uniform (budget=0.3)", "accuracy": [a - 0.05 for a in r["accuracy"]]}
                     for r in recs if r["method"] == "uniform"]
    frames = [{**r, "mean": float(np.mean(r["accuracy"])), "worst": min(r["accuracy"]), "tail": min(r["accuracy"]),
               "budget_frac": 1.0, "seconds": 1.0, "curve": [{"accuracy": r["accuracy"]}]}
              for r in recs + uniform_small if r["method"] in ("uniform", "hasa", "uniform (budget=0.3)")]
    yard = R.width_yardstick(frames, "uniform (budget=0.3)", "uniform", "hasa")
    assert yard.set_index("comparison").loc["uniform − uniform (budget=0.3)", "diff"] == pytest.approx(5.0)
    text = R.mechanism_sentence(extra, association, narrower, trained, yard, 0.5, 1.0)
    for family in ("Narrower evaluation", "Trained-width evaluation", "Width yardstick"):
        assert f"({family})" in text
    assert "moved 0.100 on average under `hasa`" in text and "clients permuted within each method" in text
    assert "the extra width of B = 0.5 buys" in text
    assert "spread over every client (uniform − uniform (budget=0.3)), +5.00 pp" in text


def test_dilution_across_specs_ranks_the_setups_by_their_dilution():
    table = pd.DataFrame({"spec": list("abcde") * 2, "protocol": ["full"] * 5 + ["selective"] * 5,
                          "family": ["Specification curve (x)"] * 10,
                          "diff pp": [-0.5, -0.3, -0.1, 0.1, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1]})
    dilution = pd.DataFrame({"spec": list("abcde") * 2, "protocol": ["full"] * 5 + ["selective"] * 5,
                             "dilution_index": [0.1, 0.2, 0.3, 0.4, 0.5] * 2})
    across = R.dilution_across_specs(dilution, table, n_resamples=999).set_index("protocol")
    assert across.loc["full", "spearman"] == pytest.approx(1.0)
    assert across.loc["selective", "spearman"] == pytest.approx(-1.0)
    assert across.loc["full", "p_perm"] == pytest.approx(2 / 120, abs=0.02)  # 1 of 5! orders, two-sided
    assert across.loc["full", "median"] == pytest.approx(0.3) and (across["specifications"] == 5).all()
    assert "Spearman ρ = +1.00" in R.dilution_across_sentence(across.reset_index())


def test_every_figure_ends_in_the_house_style():
    """finish gives the note as the figure's title and returns the figure; house_style runs a plot
    under STYLE without changing matplotlib's global settings."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    before = plt.rcParams["font.size"]

    @R.house_style
    def plot():
        fig, _ = plt.subplots()
        assert plt.rcParams["font.size"] == R.STYLE["font.size"]
        return R.finish(fig, "profile, seeds")
    fig = plot()
    assert fig._suptitle.get_text() == "profile, seeds" and plt.rcParams["font.size"] == before
    assert R.colour("hasa·sel[need]") == R.colour("hasa[need]") and R.colour("uniform") != R.colour("hasa")
    plt.close(fig)
