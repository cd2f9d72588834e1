"""Tests of the lang stage (asr_kd.data.lang) on a hand-made lexicon with hand-written expected files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from asr_kd.data.lang import LANG_FILES, Lang, LangError, add_disambig_symbols, prepare_lang
from asr_kd.data.lexicon import LexiconError
from asr_kd.guard import StageError
from asr_kd.utils import file_sha256

# homophones (red / read), a word with two pronunciations (read), prefixes (re < read < reader),
# espeak-style phones (i:, @U) and a word with an apostrophe; deliberately unsorted
LEXICON = """\
red r E d
read r E d
read r i: d
re r i:
reader r i: d @
don't d @U n t
"""

PHONES_TXT = """\
<eps> 0
SIL 1
SPN 2
@ 3
@U 4
E 5
d 6
i: 7
n 8
r 9
t 10
#0 11
#1 12
#2 13
#3 14
"""

WORDS_TXT = """\
<eps> 0
<SIL> 1
<UNK> 2
don't 3
re 4
read 5
reader 6
red 7
#0 8
<s> 9
</s> 10
"""

LEXICON_TXT = """\
<SIL> SIL
<UNK> SPN
don't d @U n t
re r i:
read r E d
read r i: d
reader r i: d @
red r E d
"""

LEXICON_DISAMBIG_TXT = """\
<SIL> SIL
<UNK> SPN
don't d @U n t
re r i: #1
read r E d #1
read r i: d #1
reader r i: d @
red r E d #2
"""

# num_sil_states=5: SIL and SPN get 5 pdfs each, the 8 other phones 3 each
PDFS_TXT = """\
0 SIL 0
1 SIL 1
2 SIL 2
3 SIL 3
4 SIL 4
5 SPN 0
6 SPN 1
7 SPN 2
8 SPN 3
9 SPN 4
10 @ 0
11 @ 1
12 @ 2
13 @U 0
14 @U 1
15 @U 2
16 E 0
17 E 1
18 E 2
19 d 0
20 d 1
21 d 2
22 i: 0
23 i: 1
24 i: 2
25 n 0
26 n 1
27 n 2
28 r 0
29 r 1
30 r 2
31 t 0
32 t 1
33 t 2
"""


@pytest.fixture
def lexicon_path(tmp_path: Path) -> Path:
    path = tmp_path / "lexicon.txt"
    path.write_text(LEXICON)
    return path


@pytest.fixture
def lang_dir(tmp_path: Path, lexicon_path: Path) -> Path:
    prepare_lang(lexicon_path, tmp_path / "lang", num_sil_states=5)
    return tmp_path / "lang"


def test_file_contents(lang_dir: Path) -> None:
    assert (lang_dir / "phones.txt").read_text() == PHONES_TXT
    assert (lang_dir / "words.txt").read_text() == WORDS_TXT
    assert (lang_dir / "lexicon.txt").read_text() == LEXICON_TXT
    assert (lang_dir / "lexicon_disambig.txt").read_text() == LEXICON_DISAMBIG_TXT
    assert (lang_dir / "pdfs.txt").read_text() == PDFS_TXT
    assert (lang_dir / "silence_phones.txt").read_text() == "SIL\nSPN\n"
    assert (lang_dir / "nonsilence_phones.txt").read_text() == "@\n@U\nE\nd\ni:\nn\nr\nt\n"
    assert (lang_dir / "disambig.txt").read_text() == "#0\n#1\n#2\n#3\n"
    topo = json.loads((lang_dir / "topo.json").read_text())
    assert topo == {"entries": [
        {"phones": ["SIL", "SPN"], "self_loop_probs": [0.75] * 5},
        {"phones": ["@", "@U", "E", "d", "i:", "n", "r", "t"], "self_loop_probs": [0.75] * 3}]}
    info = json.loads((lang_dir / "lang.json").read_text())
    assert (info["num_phones"], info["num_words"], info["num_pdfs"]) == (10, 7, 34)
    assert info["config"]["num_sil_states"] == 5 and info["config"]["num_states"] == 3
    # the sha256 of the *input* lexicon (what a rebuild is keyed on), not of the lang's own lexicon.txt
    assert info["lexicon_sha256"] == file_sha256(info["lexicon_path"]) != file_sha256(lang_dir / "lexicon.txt")


def test_lang_object(lang_dir: Path) -> None:
    lang = Lang.load(lang_dir)
    assert lang.num_pdfs == 3 * 8 + 5 * 2
    assert lang.pdf_ids("SIL") == [0, 1, 2, 3, 4]
    assert lang.pdf_ids("SPN") == [5, 6, 7, 8, 9]
    assert lang.pdf_ids("i:") == [22, 23, 24]
    assert lang.pdf_ids("t") == [31, 32, 33]
    assert lang.num_states("SPN") == 5 and lang.num_states("@U") == 3
    assert lang.pdf_to_phone_id[22:25].tolist() == [7, 7, 7]
    assert lang.pdf_to_state[8:12].tolist() == [3, 4, 0, 1]
    assert lang.phone_to_id["@U"] == 4 and lang.word_to_id["don't"] == 3
    assert lang.silence_phones == ["SIL", "SPN"]
    assert lang.disambig_ids == [11, 12, 13, 14] and lang.sil_disambig == "#3"
    assert lang.words == ["<SIL>", "<UNK>", "don't", "re", "read", "reader", "red"]
    assert lang.lexicon["read"] == [("r", "E", "d"), ("r", "i:", "d")]
    assert lang.lexicon_disambig["red"] == [("r", "E", "d", "#2")]
    (loop, forward), *_ = lang.transition_logprobs("r")
    assert loop == pytest.approx(math.log(0.75)) and forward == pytest.approx(math.log(0.25))


def test_default_states(tmp_path: Path, lexicon_path: Path) -> None:
    lang = prepare_lang(lexicon_path, tmp_path / "lang3")
    assert lang.num_pdfs == 3 * 8 + 3 * 2
    assert lang.pdf_ids("SPN") == [3, 4, 5] and lang.pdf_ids("@") == [6, 7, 8]


def test_load_round_trip(tmp_path: Path, lexicon_path: Path) -> None:
    prepared = prepare_lang(lexicon_path, tmp_path / "lang", num_sil_states=5, self_loop_prob=0.6)
    loaded = Lang.load(tmp_path / "lang")
    assert loaded == prepared
    assert loaded.pdf_to_state.tolist() == prepared.pdf_to_state.tolist()
    assert loaded.pdf_to_phone_id.tolist() == prepared.pdf_to_phone_id.tolist()
    assert loaded.topology["SIL"] == (0.6,) * 5


def test_rerun_is_noop_and_changes_rebuild(lang_dir: Path, lexicon_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    def outputs() -> dict[str, int]:  # the lock file is not an output: each run writes its pid into it
        return {p.name: p.stat().st_mtime_ns for p in lang_dir.iterdir() if not p.name.startswith(".lock-")}

    before = outputs()
    with caplog.at_level("INFO"):
        prepare_lang(lexicon_path, lang_dir, num_sil_states=5)
    assert "already done" in caplog.text
    assert outputs() == before
    # another config: rebuilt
    assert prepare_lang(lexicon_path, lang_dir, num_sil_states=1).num_pdfs == 3 * 8 + 1 * 2
    assert Lang.load(lang_dir).pdf_ids("SPN") == [1]
    # another lexicon: rebuilt
    lexicon_path.write_text(LEXICON + "cat k a t\n")
    assert "cat" in prepare_lang(lexicon_path, lang_dir, num_sil_states=1).words
    assert "cat k a t\n" in (lang_dir / "lexicon.txt").read_text()


def test_incomplete_lang_dir(lang_dir: Path, lexicon_path: Path) -> None:
    (lang_dir / "lang.json").unlink()
    with pytest.raises(LangError, match=r"lang\.json does not exist.*asr-kd lang"):
        Lang.load(lang_dir)
    prepare_lang(lexicon_path, lang_dir, num_sil_states=5)  # rebuilds
    (lang_dir / "pdfs.txt").unlink()
    with pytest.raises(LangError, match=r"pdfs\.txt does not exist"):
        Lang.load(lang_dir)


@pytest.mark.parametrize("damage", ["missing L.fst", "truncated L_disambig.fst", "edited L.fst"])
def test_damaged_lang_dir_is_rebuilt_not_reused(lang_dir: Path, lexicon_path: Path, damage: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    intact = {p.name: p.read_bytes() for p in lang_dir.iterdir() if p.name not in ("lang.json", ".lock-lang")}
    assert set(intact) == set(LANG_FILES)
    how, name = damage.split()
    if how == "missing":
        (lang_dir / name).unlink()
    elif how == "truncated":
        (lang_dir / name).write_bytes(intact[name][:20])
    else:  # same size, one bit of an arc weight flipped: only the checksum tells
        (lang_dir / name).write_bytes(intact[name][:-1] + bytes([intact[name][-1] ^ 1]))
    with caplog.at_level("WARNING"):
        prepare_lang(lexicon_path, lang_dir, num_sil_states=5)
    assert f"{lang_dir} is damaged ({lang_dir / name}" in caplog.text
    assert {name: (lang_dir / name).read_bytes() for name in intact} == intact


def test_second_lang_writer_refused(lang_dir: Path, lexicon_path: Path, lock_holder) -> None:
    holder = lock_holder(lang_dir, "lang")
    with pytest.raises(StageError, match=rf"another `asr-kd lang` run \(pid {holder.pid}"):
        prepare_lang(lexicon_path, lang_dir, num_sil_states=5)
    holder.kill()
    holder.wait()
    (lang_dir / f".tmp.{holder.pid}.pdfs.txt").write_text("left by a killed run")
    (lang_dir / f".tmp.{holder.pid}.HCLG-abc.fst").write_text("a decode's, not ours")
    prepare_lang(lexicon_path, lang_dir, num_sil_states=5)
    assert sorted(p.name for p in lang_dir.glob(".tmp.*")) == [f".tmp.{holder.pid}.HCLG-abc.fst"]


def test_corrupt_pdfs_names_line(lang_dir: Path) -> None:
    lines = PDFS_TXT.splitlines(keepends=True)
    (lang_dir / "pdfs.txt").write_text("".join(lines[:11] + ["11 @\n"] + lines[12:]))
    with pytest.raises(LangError, match=r"pdfs\.txt:12: expected 'PDF_ID PHONE STATE', got '11 @'"):
        Lang.load(lang_dir)
    (lang_dir / "pdfs.txt").write_text("".join(lines[:11] + ["11 @ 2\n"] + lines[12:]))
    with pytest.raises(LangError, match=r"pdfs\.txt:12: got '11 @ 2'"):
        Lang.load(lang_dir)


@pytest.mark.parametrize("bad_line, why", [
    ("bad r #1 d\n", "'#1': phones may not start with '#'"),
    ("bad r <eps>\n", "phones may not be '<eps>'"),
    ("<s> r\n", "words may not be one of"),
    ("<UNK> r\n", "<UNK> is reserved for the pronunciation SPN"),
    ("lonely\n", "expected 'WORD PHONE1"),
])
def test_bad_lexicon_line(tmp_path: Path, bad_line: str, why: str) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("a b\nc d\n" + bad_line + "e f\n")
    with pytest.raises(LexiconError, match=rf"lexicon\.txt:3: .*{why}"):
        prepare_lang(path, tmp_path / "lang")
    assert not (tmp_path / "lang" / "lang.json").exists()


def test_add_disambig_symbols_like_kaldi() -> None:
    lexicon = {"a": [("x",)], "b": [("x",)], "c": [("x",), ("x", "y")], "d": [("x", "y", "z")],
               "e": [("y",)]}
    disambig, max_disambig = add_disambig_symbols(lexicon)
    assert disambig == {"a": [("x", "#1")], "b": [("x", "#2")], "c": [("x", "#3"), ("x", "y", "#1")],
                        "d": [("x", "y", "z")], "e": [("y",)]}
    assert max_disambig == 3
    assert add_disambig_symbols({"a": [("x",)], "b": [("y",)]}) == ({"a": [("x",)], "b": [("y",)]}, 0)


def _best_words(lang: Lang, fst_name: str, lang_dir: Path, phones: list[str]) -> list[str] | None:
    """Words of the best path of (linear phone acceptor) o L; None if there is no path."""
    import kaldifst

    lexicon_fst = kaldifst.StdVectorFst.read(str(lang_dir / fst_name))
    acceptor = kaldifst.make_linear_acceptor([lang.phone_to_id[p] for p in phones])
    composed = kaldifst.compose(acceptor, lexicon_fst)
    if composed.num_states == 0:
        return None
    best = kaldifst.shortest_path(composed)
    ok, _, word_ids, _ = kaldifst.get_linear_symbol_sequence(best)
    assert ok
    return [lang.word_symbols[w] for w in word_ids]


def test_lexicon_fsts(lang_dir: Path) -> None:
    lang = Lang.load(lang_dir)
    phones = "SIL r i: d @ SIL d @U n t r i:".split()
    # leading / inner silence is optional silence (cost ln 2), cheaper than the word <SIL> (2 ln 2)
    assert _best_words(lang, "L.fst", lang_dir, phones) == ["reader", "don't", "re"]
    assert _best_words(lang, "L.fst", lang_dir, "r i: d".split()) == ["read"]
    assert _best_words(lang, "L_disambig.fst", lang_dir, "r E d #2 SIL #3 r E d #1 #0".split()) == [
        "red", "read", "#0"]  # the #0:#0 self-loop passes #0 through to G
    # L_disambig needs the disambiguation symbols, and L has none
    assert _best_words(lang, "L_disambig.fst", lang_dir, "r E d".split()) is None
    assert _best_words(lang, "L.fst", lang_dir, "r E d #2".split()) is None


def test_lexicon_fst_without_optional_silence(tmp_path: Path, lexicon_path: Path) -> None:
    lang = prepare_lang(lexicon_path, tmp_path / "lang", sil_prob=0.0)
    assert _best_words(lang, "L.fst", tmp_path / "lang", "SIL d @U n t r i:".split()) == [
        "<SIL>", "don't", "re"]
    assert _best_words(lang, "L_disambig.fst", tmp_path / "lang", "SIL #3 r i: #1".split()) is None
