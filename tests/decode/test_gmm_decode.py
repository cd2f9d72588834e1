"""Tests of GMM-system decoding (asr_kd.decode.gmm_decode, ``asr-kd decode-gmm``) and of ``--lm-text``.

The cuts are those of test_decode_run (one-hot pdf features of known words); the monophone GMM has one
Gaussian per pdf fitted to the aligner's features (:func:`asr_kd.align.feats.gmm_features`) of those very
frames, so it must decode them without error; a GMM with the pdfs of ``one`` and ``three`` swapped must
hear ``one two three`` as ``three two one``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from decode_fixtures import LM_TEXT, make_lang, pdf_sequence
from lhotse import CutSet, NumpyFilesWriter
from test_decode_run import make_cut, swap_pdfs

from asr_kd.align.feats import gmm_features
from asr_kd.align.gmm import DiagGmm
from asr_kd.cli import main
from asr_kd.decode.gmm_decode import decode_gmm, load_gmm_system
from asr_kd.decode.record import load_record
from asr_kd.decode.run import decode_cuts, read_lm_text

SENTENCES = (["one", "two", "three"], ["two", "two"], ["three", "ten", "one"])


def fit_gmm(cuts: CutSet, pdfs: list[np.ndarray], num_pdfs: int, perm: np.ndarray | None = None) -> DiagGmm:
    """One Gaussian per pdf on the GMM features of ``cuts`` labelled ``pdfs`` (pdf ``perm[p]`` gets p's)."""
    feats = torch.cat([gmm_features(torch.from_numpy(c.load_features())) for c in cuts]).double()
    labels = torch.from_numpy(np.concatenate(pdfs))
    means, vars_ = torch.zeros(num_pdfs, 1, feats.shape[1]), torch.ones(num_pdfs, 1, feats.shape[1])
    for p in range(num_pdfs):
        x = feats[labels == p]
        if len(x):
            target = p if perm is None else int(perm[p])
            means[target, 0], vars_[target, 0] = x.mean(0).float(), x.var(0, unbiased=False).clamp_min(1e-2).float()
    return DiagGmm(means, vars_, torch.zeros(num_pdfs, 1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("gmm_decode")
    lang = make_lang(tmp)
    writer = NumpyFilesWriter(tmp / "storage")
    pdfs = [np.array(pdf_sequence(lang, words, 3)) for words in SENTENCES]
    cuts = CutSet.from_cuts([make_cut(writer, lang, f"utt-{i}", w, " ".join(w), p)
                             for i, (w, p) in enumerate(zip(SENTENCES, pdfs))])  # fmt: skip
    cuts.to_file(tmp / "test.jsonl.gz")
    (tmp / "lm.txt").write_text("\n".join(LM_TEXT) + "\n\n", encoding="utf-8")
    for name, perm in (("mono", None), ("swapped", swap_pdfs(lang))):
        gmm = fit_gmm(cuts, pdfs, lang.num_pdfs, perm)
        (tmp / name).mkdir()
        torch.save({"gmm": gmm.state_dict(), "config": {}, "num_pdfs": lang.num_pdfs}, tmp / name / "final.gmm.pt")
    return {"tmp": tmp, "lang": lang}


def test_monophone_gmm_decodes_its_own_frames(setup) -> None:
    tmp = setup["tmp"]
    result = decode_gmm(tmp / "mono" / "final.gmm.pt", tmp / "test.jsonl.gz", tmp / "lang", tmp / "decode", "mono",
                        lm_text=tmp / "lm.txt", lm_order=2, acoustic_scale=0.1)  # fmt: skip
    assert result["wer"] == 0.0 and result["num_words"] == 8 and result["frame_acc"] > 0.9
    assert (result["role"], result["arch"], result["size"]) == ("gmm", "gmm", "mono")
    assert result["num_no_final"] == 0 and result["num_retries"] == 0 and result["params"] > 0
    assert load_record(tmp / "decode" / "result-mono.json") == result
    assert (tmp / "decode" / "no-final-mono.txt").read_text() == ""


def test_swapped_gmm_hears_the_swapped_words(setup) -> None:
    tmp = setup["tmp"]
    result = decode_gmm(tmp / "swapped" / "final.gmm.pt", tmp / "test.jsonl.gz", tmp / "lang", tmp / "decode",
                        "swapped", lm_text=tmp / "lm.txt", lm_order=2, acoustic_scale=1.0)  # fmt: skip
    recogs = (tmp / "decode" / "recogs-swapped.txt").read_text()
    assert "utt-0:\thyp=['three', 'two', 'one']" in recogs
    assert result["sub"] >= 2 and result["frame_acc"] < 0.7


def test_decode_gmm_cli_and_errors(setup, capsys) -> None:
    tmp = setup["tmp"]
    code = main(["decode-gmm", "--gmm", str(tmp / "mono" / "final.gmm.pt"), "--cuts", str(tmp / "test.jsonl.gz"),
                 "--lang-dir", str(tmp / "lang"), "--lm-text", str(tmp / "lm.txt"), "--lm-order", "2",
                 "--output-dir", str(tmp / "cli"), "--tune-cuts", str(tmp / "test.jsonl.gz"),
                 "--tune-scales", "0.05", "0.1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("final: WER 0.00%") and "0 cuts without a final state, 0 retries" in out
    tuning = load_record(tmp / "cli" / "result-final.json")["decode_config"]["tuning"]
    assert set(tuning["no_final_by_scale"]) == {"0.05", "0.1"}
    with pytest.raises(FileNotFoundError, match="final.gmm.pt"):
        load_gmm_system(tmp / "nosuch" / "final.gmm.pt")
    torch.save({"means": torch.zeros(2)}, tmp / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        load_gmm_system(tmp / "bad.pt")


def test_lm_text(setup, tmp_path: Path) -> None:
    tmp = setup["tmp"]
    assert read_lm_text(tmp / "lm.txt") == LM_TEXT  # blank lines dropped
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="empty.txt has no non-empty line"):
        read_lm_text(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_lm_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not both"):
        decode_cuts([tmp / "x.pt"], tmp / "test.jsonl.gz", tmp / "lang", tmp_path, "x", pdf_counts=tmp / "c.txt",
                    lm_cuts=tmp / "test.jsonl.gz", lm_text=tmp / "lm.txt")  # fmt: skip


def _system(lang, gmm: DiagGmm, tree, name: str):
    from asr_kd.hmm.system import GmmSystem, lang_sha256
    from asr_kd.hmm.transitions import TransitionModel

    return GmmSystem(name, gmm, {"kind": "deltas"}, tree, TransitionModel.from_lang(lang), lang_sha256(lang))


def test_gmm_system_monophone_and_triphone(setup, tmp_path: Path) -> None:
    """asr_kd.hmm GmmSystems: the monophone one decodes as the old file did, on the same cached graph; a
    triphone tree that gives t before uw (two) its own pdf decodes over the C o LG graph of that tree."""
    from asr_kd.hmm.tree import ContextDependency, Question

    tmp, lang = setup["tmp"], setup["lang"]
    cuts = CutSet.from_file(tmp / "test.jsonl.gz")
    pdfs = [np.array(pdf_sequence(lang, words, 3)) for words in SENTENCES]
    mono = _system(lang, fit_gmm(cuts, pdfs, lang.num_pdfs), ContextDependency.monophone(lang), "mono")
    mono.save(tmp_path / "mono.gmm.pt")
    result = decode_gmm(tmp_path / "mono.gmm.pt", tmp / "test.jsonl.gz", tmp / "lang", tmp_path / "decode", "mono",
                        lm_text=tmp / "lm.txt", lm_order=2, acoustic_scale=0.1)  # fmt: skip
    old = load_record(tmp / "decode" / "result-mono.json")  # the older file's decode, same graph
    assert result["wer"] == 0.0 and result["decode_config"]["graph"] == old["decode_config"]["graph"]
    # tri: t's first state followed by uw gets pdf num_pdfs; frames of "two" relabelled to match
    t, uw = lang.phone_to_id["t"], lang.phone_to_id["uw"]
    roots = dict(ContextDependency.monophone(lang).roots)
    new_pdf = lang.num_pdfs
    roots[(t, 0)] = Question(2, [uw], new_pdf, roots[(t, 0)])
    tree = ContextDependency(3, 1, roots)
    assert tree.num_pdfs == lang.num_pdfs + 1
    tri_pdfs = []
    for words, p in zip(SENTENCES, pdfs):
        p = p.copy()
        t0 = lang.pdf_ids("t")[0]
        for i in np.flatnonzero(p == t0):  # the next phone's first frame decides: uw -> the new pdf
            j = i
            while j < len(p) and p[j] in lang.pdf_ids("t"):
                j += 1
            if j < len(p) and p[j] in lang.pdf_ids("uw"):
                p[i] = new_pdf
        tri_pdfs.append(p)
    assert sum((p == new_pdf).sum() for p in tri_pdfs) > 0
    tri = _system(lang, fit_gmm(cuts, tri_pdfs, tree.num_pdfs), tree, "tri1")
    tri.save(tmp_path / "tri1.gmm.pt")
    code = main(["decode-gmm", "--gmm", str(tmp_path / "tri1.gmm.pt"), "--cuts", str(tmp / "test.jsonl.gz"),
                 "--lang-dir", str(tmp / "lang"), "--lm-text", str(tmp / "lm.txt"), "--lm-order", "2",
                 "--acoustic-scale", "0.1", "--output-dir", str(tmp_path / "decode")])  # fmt: skip
    assert code == 0
    record = load_record(tmp_path / "decode" / "result-tri1.json")  # name from the file: tri1
    assert record["wer"] == 0.0 and record["size"] == "N=3" and record["frame_acc"] > 0.9
    assert record["decode_config"]["graph"] != result["decode_config"]["graph"]
    # the cuts' frame labels are monophone pdfs: exactly the frames of t before uw (now the new pdf) differ
    new_frames = sum(int((p == new_pdf).sum()) for p in tri_pdfs)
    assert record["frame_acc"] == pytest.approx(1 - new_frames / sum(len(p) for p in tri_pdfs))


def test_gmm_files_are_read_once_as_tensors_and_plain_data(setup, tmp_path: Path, monkeypatch) -> None:
    """The align stage's format: one torch.load; the older monophone file: weights_only too; every
    refusal names the file."""
    from asr_kd.data.lang import prepare_lang
    from asr_kd.hmm.system import StaleSystemError
    from asr_kd.hmm.tree import ContextDependency

    tmp, lang = setup["tmp"], setup["lang"]
    gmm = DiagGmm.from_state_dict(torch.load(tmp / "mono" / "final.gmm.pt", weights_only=True)["gmm"])
    _system(lang, gmm, ContextDependency.monophone(lang), "mono").save(tmp_path / "mono.gmm.pt")
    loads: list[tuple[str, object]] = []
    torch_load = torch.load

    def counted(path, *args, **kwargs):
        loads.append((Path(path).name, kwargs.get("weights_only")))
        return torch_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    system = load_gmm_system(tmp_path / "mono.gmm.pt", lang)
    assert system.num_pdfs == lang.num_pdfs and loads == [("mono.gmm.pt", True)]
    loads.clear()
    legacy = load_gmm_system(tmp / "mono" / "final.gmm.pt", lang)
    assert legacy.num_pdfs == lang.num_pdfs and {w for _, w in loads} == {True}
    other = prepare_lang(tmp / "lexicon.txt", tmp_path / "other-lang", num_states=2, num_sil_states=1,
                         self_loop_prob=0.6, sil_prob=0.4)  # fmt: skip
    # a system of this format for another lang: refused, not read as the old format
    with pytest.raises(StaleSystemError, match=r"mono.gmm.pt was built for another lang"):
        load_gmm_system(tmp_path / "mono.gmm.pt", other)
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(StaleSystemError, match=r"garbage.pt: cannot read a GMM system"):
        load_gmm_system(tmp_path / "garbage.pt")
