"""The pages: the house number style of tables, the README's verdict table and opening paragraph,
the report's checks (nan, e-notation, links into the report), and the tidy export of every run."""
import math

import numpy as np
import pandas as pd
import pytest

import hasa_records as HR
import hasa_results as R
from hasa_results import report


@pytest.mark.parametrize("x, column, shown", [
    (np.nan, "diff", "—"), (9.917e-06, "p_holm", "< 0.001"), (9.917e-06, "diff", "0"), (-0.5316, "diff", "-0.532"),
    (0.00871, "p_holm", "0.00871"), (12345.6, "seconds", "12,346"), (15.0, "mean", "15"), (7, "n", "7"),
    ("hasa", "method", "hasa"), (None, "family", "—")])
def test_a_table_cell_has_no_nan_and_no_e_notation(x, column, shown):
    assert R.cell(x, column) == shown


def test_a_mean_and_its_sd_are_one_markdown_column_and_two_csv_columns():
    df = pd.DataFrame({"method": ["a", "a", "b", "b"], "mean": [15.0, 16.0, 14.0, 14.5], "worst": [1, 2, 3, 4.0],
                       "tail": [1, 1, 1, 1.0], "budget_frac": [1, 1, 0.99, 0.995]})
    t = R.summary_table(df)
    assert t.loc["a", "mean"] == 15.5 and t.loc["a", "mean sd"] == pytest.approx(math.sqrt(0.5))
    md = R.table_markdown(t)
    assert "15.50 ± 0.71" in md and "14.25 ± 0.35" in md and " sd" not in md


def _verdicts(full_diff: float, sel_diff: float, full_verdict: str, sel_verdict: str) -> pd.DataFrame:
    rows = []
    for claim in "1234":
        for protocol, d, v in (("full", full_diff, full_verdict), ("selective", sel_diff, sel_verdict)):
            test = "slope of gain on tracking (pp per unit ρ), mean" if claim == "4" else "hasa − uniform, mean"
            rows.append({"claim": claim, "protocol": protocol, "test 1": test, "diff 1": d, "ci_low 1": d - 0.2,
                         "ci_high 1": d + 0.2, "n": 30, "verdict": v})
    return pd.DataFrame(rows)


def test_the_verdict_table_has_one_row_per_claim_and_one_column_per_protocol():
    md = R.headline_markdown(_verdicts(-0.37, 0.38, "contradicted", "reproduced"))
    lines = md.splitlines()
    assert lines[0] == "| claim | the paper says | under `full` | under `selective` | figure |"
    assert len([x for x in lines if x.startswith("| ")]) == 5  # header + four claims
    assert "**contradicted**: mean -0.37 pp [-0.57, -0.17]" in md and "**reproduced**: mean +0.38 pp" in md
    assert "mean +0.38 pp per unit ρ" in md  # claim 4's number is a slope
    assert "99.7% simultaneous CI over 30 paired seeds" in md and "nan" not in md


def test_the_opening_paragraph_says_when_claim_1s_sign_depends_on_the_protocol():
    assert R.lede(_verdicts(-0.37, 0.38, "contradicted", "reproduced")).startswith(
        "**Claim 1's sign depends on the aggregation protocol**: under `full` HASA − uniform is -0.37 pp")
    assert R.lede(_verdicts(-0.1, 0.1, "inconclusive", "not reproduced")).startswith(
        "**Claim 1's verdict depends on the aggregation protocol**")
    assert R.lede(_verdicts(0.5, 0.45, "reproduced", "reproduced")).startswith(
        "**Claim 1's verdict is the same under both aggregation protocols**")


def test_the_check_finds_nan_e_notation_and_links_to_missing_headings():
    page = "A | nan | 9.9e-06 | `1e-3 in code` | sha 856c99ddf50e497d\n"
    assert report.style_problems("P", page) == ["P: nan in ['nan']", "P: e-notation in ['9.9e-06']"]
    readme = "see [x](results/REPORT.md#02--claim-2--baselines) and [y](results/REPORT.md#performance)"
    assert report.broken_report_links(readme, "# T\n### 02 · Claim 2 — baselines\n### Performance\n") == []
    assert report.broken_report_links(readme, "# T\n### Performance\n") == ["02--claim-2--baselines"]


def test_a_missing_results_file_fills_its_block_with_one_line_saying_so(tmp_path):
    text, filled = report.fill_blocks("<!-- text: lede -->\nold\n<!-- end text -->\n", tmp_path)
    assert filled == ["text:lede"] and "not been computed" in text
    text, _ = report.fill_blocks("<!-- text: many-clients -->\nold\n<!-- end text -->\n", tmp_path)
    assert "*Not computed yet: `many_clients_paired_tests.csv` is not in `results/`" in text


def test_the_running_time_block_gives_cpu_hours_and_hours_on_two_cores():
    runtime = pd.DataFrame({"experiment": ["a", "total"], "CPU minutes (new runs)": [600.0, 900.0]})
    block = R.running_time(runtime, {"make_test_minutes": 14.2, "smoke_minutes": 9.6, "machine": "CPU X",
                                     "load": "2.00", "disk_mib": {"environment": 2048.0, "data": 120.4}},
                           {"PSS": 1887.5, "RSS": 3420.0})
    assert "15.0 CPU-hours of runs, about 7.5 hours on two cores" in block
    assert "| check the committed results: `make test` | 14 min |" in block
    assert "Flower scale notebook: 1.8 GiB PSS, 3.3 GiB RSS" in block and "environment 2.0 GiB, data 120 MiB" in block
    assert "not measured yet" in R.running_time(runtime, None, None)


@pytest.mark.skipif(not (HR.DEFAULT_RESULTS_DIR / report.ALL_RUNS).is_file(), reason="no export committed yet")
def test_the_tidy_export_recomputes_a_table_1_cell():
    """Table 1's uniform mean: per seed, the unweighted mean of the clients' final accuracies, then
    the mean over the claims experiment's seeds."""
    runs = pd.read_csv(HR.DEFAULT_RESULTS_DIR / report.ALL_RUNS)
    u = runs[(runs["experiment"] == "claims") & (runs["method"] == "uniform") & (runs["metric"] == "accuracy")]
    per_seed = u.groupby("seed")["value"].mean()
    table1 = pd.read_csv(HR.DEFAULT_RESULTS_DIR / "table1_main.csv", index_col=0)
    assert len(per_seed) == table1.loc["uniform", "seeds"]
    assert per_seed.mean() == pytest.approx(table1.loc["uniform", "mean"], abs=1e-9)


def _notebook(path, cells):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    nb.cells[-1].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "**Done.** It holds."})]
    path.write_text(nbformat.writes(nb))


def test_the_report_orders_parts_embeds_figures_links_long_tables_and_shows_each_table_once(tmp_path):
    (tmp_path / "notebooks").mkdir()
    short = pd.DataFrame({"x": [1.5, 2.5]})
    long = pd.DataFrame({"x": np.arange(report.LONG_TABLE + 1, dtype=float)})
    for name, t in (("short", short), ("long", long)):
        (tmp_path / f"{name}.md").write_text(R.table_markdown(t))
    _notebook(tmp_path / "notebooks" / "01_main_table.ipynb", [
        ("md", "# 01 · Claim one\n\nThe question."), ("md", "## Tables\n\nWhy."),
        ("code", 'R.save_table(a, "short", d)\nR.save_table(b, "long", d)\nR.save_figure(f, "01_fig", g)'),
        ("code", "Markdown(conclusion)")])
    _notebook(tmp_path / "notebooks" / "06_summary.ipynb", [
        ("md", "# 06 · Summary"), ("md", "## Again"), ("code", 'R.save_table(a, "short", d)'), ("code", "x")])
    text = report.report_text(tmp_path)
    summary, claim_one = (f"### {report._title(n)}" for n in ("06_summary", "01_main_table"))  # the sources' titles
    assert text.index("## Summary and plan") < text.index(summary) < text.index("## The claims") < text.index(claim_one)
    assert "![01_fig](../figures/01_fig.png)" in text and "##### Tables" in text
    assert f"Table [`long.csv`](long.csv): {report.LONG_TABLE + 1} rows, 2 columns" in text
    assert text.count("`short`:") == 1  # notebook 06 saved it first; notebook 01 does not repeat it
    assert "* [Summary and plan](#summary-and-plan)" in text and "**Done.** It holds." in text
    assert "Provenance: not recorded" in text


def test_the_shakespeare_row_counts_where_the_medium_verdict_carries_over():
    cross = pd.DataFrame([
        {"claim": "1", "protocol": "full", "a: carries over": True, "b: carries over": False},
        {"claim": "3", "protocol": "full", "a: carries over": True, "b: carries over": None},
        {"claim": "1", "protocol": "selective", "a: carries over": False, "b: carries over": False},
        {"claim": "3", "protocol": "selective", "a: carries over": True, "b: carries over": True}])
    row = R.carry_over_row(cross)
    assert row["under `full`"] == "the Medium verdict carries over in **2 of 4** (claim, federation) cells, 1 open"
    assert row["under `selective`"] == "the Medium verdict carries over in **2 of 4** (claim, federation) cells"
    md = R.headline_markdown(_verdicts(-0.37, 0.38, "contradicted", "reproduced"), [row])
    assert "| 1, 3 on Shakespeare | (not tested in the paper) | the Medium verdict carries over in **2 of 4**" in md


def test_the_shakespeare_row_says_how_many_seeds_each_federation_has():
    cross = pd.DataFrame([{"Medium: n": 30, "8 roles: n": 30, "LEAF roles, 10%/round: n": 10},
                          {"Medium: n": 30, "8 roles: n": 29, "LEAF roles, 10%/round: n": 10}])
    assert R.federation_seeds(cross) == "8 roles: 30 paired seeds; LEAF roles, 10%/round: 10 paired seeds"


def test_a_notebook_without_a_paper_copy_has_a_section_saying_so_and_a_stale_copy_is_marked(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_main_table.ipynb", [("md", "# 01 · Claim one"), ("code", "old = 1")])
    text = report.report_text(tmp_path)
    source = report._notebook_parts(report.NOTEBOOKS / "11_shakespeare.ipynb")["title"]
    assert f"### {source}" in text and f"#{report._anchor(source)}) · not computed yet" in text
    assert "*Not computed at the paper profile yet*: `make reproduce` executes `notebooks/11_shakespeare.ipynb`" \
        in text
    assert "*Executed with an earlier version of `notebooks/01_main_table.ipynb`*" in text
    assert f"### {report._title('01_main_table')}" in text and "### 01 · Claim one" not in text  # links stay valid
    assert report.is_current(report.NOTEBOOKS / "01_main_table.ipynb", report.NOTEBOOKS / "01_main_table.ipynb")
    assert not report.is_current(tmp_path / "notebooks" / "01_main_table.ipynb",
                                 report.NOTEBOOKS / "01_main_table.ipynb")


def test_a_bench_table_shows_its_numbers_in_the_house_style_and_keeps_its_words(tmp_path):
    csv = tmp_path / "bench.csv"
    csv.write_text(",medium,digits\ntargets/s,4.11e+04,1.42e+04\nload,1.27 / 1.23,\ntorch,2.13.0+cpu,2.13.0+cpu\n")
    md = report.bench_markdown(csv)
    assert "41,100" in md and "14,200" in md and "1.27 / 1.23" in md and "2.13.0+cpu" in md
    assert report.style_problems("bench", md) == []
