"""Tests of the decode stage (asr_kd.decode.run, ``asr-kd decode``) on the tiny lang of decode_fixtures.

The cuts' features are one-hot pdf ids (feature_dim = num_pdfs) of known word sequences, and the models
are zoo DNNs shrunk to one hidden layer whose weights are set by hand: per-utterance CMVN leaves the
active pdf's dimension the only positive one, ReLU keeps it, and the output layer maps it to a peaked
logit on the same pdf ("exact" model) or on a swapped pdf ("swapped" model: the phones of ``one`` and
``three`` exchanged, so it hears ``one two three`` as ``three two one``). So every WER and frame
accuracy below is known in advance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from decode_fixtures import LM_TEXT, make_lang, pdf_sequence
from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter, SupervisionSegment

from asr_kd.cli import main
from asr_kd.commands.decode import default_name
from asr_kd.data.lang import Lang
from asr_kd.decode.record import FIELD_NAMES
from asr_kd.decode.report import load_records, make_report
from asr_kd.decode.run import decode_cuts
from asr_kd.models import ModelConfig, build_model
from asr_kd.models.checkpoint import checkpoint_hash, save_checkpoint

CORRUPTED = 4  # frame labels of cut "exact-a" changed from the truth (frame accuracy (T - 4) / T)
TRAIN_CONFIG = {"temperature": 2.0, "alpha": 0.5, "data": {"train_fraction": 0.03}}


def make_cut(writer: NumpyFilesWriter, lang: Lang, cut_id: str, words: list[str], ref: str,
             labels: np.ndarray | None = None) -> MonoCut:  # fmt: skip
    """A cut whose features are the one-hot pdfs of ``words`` (3 frames per state, SIL at both ends)."""
    pdfs = np.array(pdf_sequence(lang, words, 3))
    feats = np.eye(lang.num_pdfs, dtype=np.float32)[pdfs]
    n = len(pdfs)
    features = Features(type="onehot", num_frames=n, num_features=lang.num_pdfs, frame_shift=0.01,
                        sampling_rate=16000, start=0.0, duration=n * 0.01, storage_type=writer.name,
                        storage_path=writer.storage_path, storage_key=writer.write(cut_id, feats))  # fmt: skip
    custom = None
    if labels is not None:
        custom = {"frame_labels": writer.store_array(f"{cut_id}-labels", labels.astype(np.int32), frame_shift=0.01,
                                                    temporal_dim=0, start=0.0)}  # fmt: skip
    sup = SupervisionSegment(f"{cut_id}-sup", cut_id, 0.0, n * 0.01, text=ref)
    return MonoCut(cut_id, 0.0, n * 0.01, 0, features=features, supervisions=[sup], custom=custom)


def swap_pdfs(lang: Lang) -> np.ndarray:
    """pdf -> pdf exchanging the states of w<->th, ah<->r, n<->iy (``one`` <-> ``three``)."""
    perm = np.arange(lang.num_pdfs)
    for a, b in (("w", "th"), ("ah", "r"), ("n", "iy")):
        for pa, pb in zip(lang.pdf_ids(a), lang.pdf_ids(b), strict=True):
            perm[pa], perm[pb] = pb, pa
    return perm


def make_model(path: Path, lang: Lang, scale: float, perm: np.ndarray | None = None,
               hidden: int | None = None, train_config: dict | None = None) -> Path:  # fmt: skip
    """A one-hidden-layer DNN with logits ``scale * cmvn(x)_+`` on pdf ``perm[input pdf]``."""
    p = lang.num_pdfs
    hidden = hidden or p
    config = ModelConfig("dnn", "student-small", num_pdfs=p, feature_dim=p, dropout=0.0,
                         overrides={"hidden_dim": hidden, "num_layers": 1, "left_context": 0, "right_context": 0,
                                    "norm": "none"})  # fmt: skip
    model = build_model(config)
    perm = np.arange(p) if perm is None else perm
    with torch.no_grad():
        model.context_affine.weight.zero_()
        model.context_affine.weight[:p, :, 0] = torch.eye(p)
        model.context_affine.bias.zero_()
        model.output.weight.zero_()
        model.output.weight[torch.from_numpy(perm), torch.arange(p)] = scale
        model.output.bias.zero_()
    extra = {"train_config": train_config} if train_config else {}
    return save_checkpoint(path, model, config, extra)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("decode_run")
    lang = make_lang(tmp)
    writer = NumpyFilesWriter(tmp / "storage")
    pdfs_a = np.array(pdf_sequence(lang, ["one", "two", "three"], 3))
    labels_a = pdfs_a.copy()
    labels_a[:CORRUPTED] = (labels_a[:CORRUPTED] + 1) % lang.num_pdfs
    pdfs_b = np.array(pdf_sequence(lang, ["two", "two"], 3))
    test = CutSet.from_cuts([make_cut(writer, lang, "exact-a", ["one", "two", "three"], "one two three", labels_a),
                             make_cut(writer, lang, "exact-b", ["two", "two"], "two two", pdfs_b)])  # fmt: skip
    test.to_file(tmp / "test.jsonl.gz")
    # no frame labels; references differing from the spoken words by 1 sub, 1 ins, 1 del; one lost file
    mixed = [make_cut(writer, lang, "sub", ["one", "two", "three"], "one ten three"),
             make_cut(writer, lang, "ins", ["two", "one"], "two"),
             make_cut(writer, lang, "del", ["three"], "three one"),
             make_cut(writer, lang, "lost", ["ten"], "ten")]  # fmt: skip
    (Path(mixed[-1].features.storage_path) / mixed[-1].features.storage_key).unlink()
    CutSet.from_cuts(mixed).to_file(tmp / "mixed.jsonl.gz")
    train = [MonoCut(f"lm-{i}", 0.0, 1.0, 0, supervisions=[SupervisionSegment(f"lm-{i}", f"lm-{i}", 0.0, 1.0, text=t)])
             for i, t in enumerate(LM_TEXT)]  # fmt: skip
    CutSet.from_cuts(train).to_file(tmp / "train.jsonl.gz")
    counts = np.bincount(np.concatenate([pdfs_a, pdfs_b]), minlength=lang.num_pdfs) + 1
    (tmp / "pdf_counts.txt").write_text("".join(f"{c}\n" for c in counts))
    swap = swap_pdfs(lang)
    models = {
        "exact": make_model(tmp / "exact" / "best.pt", lang, 20.0, train_config=TRAIN_CONFIG),
        "exact-weak": make_model(tmp / "exact-weak" / "best.pt", lang, 1.0, hidden=lang.num_pdfs + 3),
        "swapped": make_model(tmp / "swapped" / "best.pt", lang, 20.0, perm=swap),
        "swapped-weak": make_model(tmp / "swapped-weak" / "best.pt", lang, 1.0, perm=swap),
    }
    true_pdfs = np.concatenate([pdfs_a, pdfs_b])
    labels = np.concatenate([labels_a, pdfs_b])
    return {"tmp": tmp, "lang": lang, "models": models, "swap": swap, "true_pdfs": true_pdfs, "labels": labels,
            "common": {"lang_dir": tmp / "lang", "pdf_counts": tmp / "pdf_counts.txt",
                       "lm_cuts": tmp / "train.jsonl.gz", "lm_order": 2, "device": "cpu", "batch_size": 2}}  # fmt: skip


def run(setup: dict, models: list[str], cuts: str, name: str, **kwargs) -> dict:
    kwargs = {"output_dir": setup["tmp"] / "decode", **setup["common"], **kwargs}
    return decode_cuts([setup["models"][m] for m in models], setup["tmp"] / f"{cuts}.jsonl.gz", name=name, **kwargs)


def test_exact_model_decodes_the_spoken_words(setup) -> None:
    result = run(setup, ["exact"], "test", "exact", role="teacher")
    total = len(setup["labels"])
    assert set(result) == set(FIELD_NAMES)
    assert (result["wer"], result["sub"], result["ins"], result["del"]) == (0.0, 0, 0, 0)
    assert (result["num_words"], result["num_utts"], result["num_skipped"], result["num_frames"]) == (5, 2, 0, total)
    assert result["frame_acc"] == pytest.approx((total - CORRUPTED) / total)
    assert result["params"] == sum(p.numel() for p in torch.load(setup["models"]["exact"])["model"].values())
    assert (result["temperature"], result["alpha"], result["train_fraction"]) == (2.0, 0.5, 0.03)
    assert (result["arch"], result["size"], result["role"]) == ("dnn", "student-small", "teacher")
    assert result["checkpoint_sha256"] == [checkpoint_hash(setup["models"]["exact"])]
    assert result["audio_seconds"] == pytest.approx(total * 0.01)
    assert result["rtf"] == pytest.approx(result["decode_seconds"] / result["audio_seconds"])
    assert result["decode_config"]["lm_order"] == 2 and result["decode_config"]["beam"] == 13.0
    out = setup["tmp"] / "decode"
    assert json.loads((out / "result-exact.json").read_text()) == result
    assert "exact-a:\thyp=['one', 'two', 'three']" in (out / "recogs-exact.txt").read_text()
    assert (out / "wer-summary-exact.txt").read_text().endswith("exact\t0.00\n")
    assert (out / "skipped-exact.txt").read_text() == ""


def test_what_decode_writes_is_what_the_report_loads(setup, tmp_path) -> None:
    teacher = run(setup, ["exact"], "test", "teacher-0", role="teacher", output_dir=tmp_path / "decode")
    student = run(setup, ["swapped"], "test", "student-hard", role="student_hard", output_dir=tmp_path / "decode")
    assert load_records(tmp_path / "decode") == [student, teacher]  # sorted by file name, validated field by field
    results = make_report(tmp_path, plot=False)
    by_name = {r["name"]: r for r in results["models"]}
    assert by_name["teacher-0"] == teacher and by_name["student-hard"] == student
    assert by_name["mean_teacher"]["wer"] == teacher["wer"] and by_name["mean_teacher"]["members"] == ["teacher-0"]
    assert "| teacher-0 | dnn / student-small |" in results["markdown"]
    broken = {**teacher, "num_words": -1}
    (tmp_path / "decode" / "result-teacher-0.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"result-teacher-0.json: field `num_words` must be an integer >= 0"):
        load_records(tmp_path / "decode")


def test_swapped_model_gives_known_substitutions_and_frame_accuracy(setup) -> None:
    result = run(setup, ["swapped"], "test", "swapped")
    assert (result["sub"], result["ins"], result["del"], result["num_words"]) == (2, 0, 0, 5)
    assert result["wer"] == pytest.approx(2 / 5)
    assert "exact-a:\thyp=['three', 'two', 'one']" in (setup["tmp"] / "decode" / "recogs-swapped.txt").read_text()
    hand = np.mean(setup["swap"][setup["true_pdfs"]] == setup["labels"])
    assert 0.3 < hand < 0.8 and result["frame_acc"] == pytest.approx(hand)
    assert result["temperature"] is None and result["alpha"] is None and result["train_fraction"] is None


def test_ensemble_averages_posteriors_and_sums_params(setup) -> None:
    """The more peaked member wins where the two disagree: the mean of posteriors, not the first model."""
    exact, swapped = run(setup, ["exact"], "test", "e1"), run(setup, ["swapped"], "test", "s1")
    # mean posteriors: ~0.5 on the spoken pdf, <= 0.4 on the swapped one; acoustic scale 1 lets it outweigh the LM
    strong_exact = run(setup, ["exact", "swapped-weak"], "test", "ens1", role="ensemble", acoustic_scale=1.0)
    strong_swapped = run(setup, ["exact-weak", "swapped"], "test", "ens2")
    assert strong_exact["frame_acc"] == pytest.approx(exact["frame_acc"])
    assert strong_exact["wer"] == 0.0
    assert strong_swapped["frame_acc"] == pytest.approx(swapped["frame_acc"])
    p = setup["lang"].num_pdfs
    weak_params = (p + 3) * p + (p + 3) + p * (p + 3) + p  # the wider exact-weak model
    assert strong_swapped["params"] == swapped["params"] + weak_params
    assert strong_exact["params"] == exact["params"] + swapped["params"]
    assert strong_exact["arch"] == ["dnn", "dnn"] and strong_exact["size"] == ["student-small", "student-small"]
    assert strong_exact["temperature"] is None and strong_exact["train_fraction"] is None
    assert len(strong_exact["models"]) == len(strong_exact["checkpoint_sha256"]) == 2


def test_acoustic_scale_tuned_on_a_development_set(setup) -> None:
    """At scale 0.1 the LM outvotes the ensemble (WER 0.2, as above); tuning on dev cuts picks 1.0 (WER 0)."""
    at_01 = run(setup, ["exact", "swapped-weak"], "test", "ens-01", acoustic_scale=0.1)
    tuned = run(setup, ["exact", "swapped-weak"], "test", "ens-tuned", tune_cuts=setup["tmp"] / "test.jsonl.gz",
                tune_scales=(1.0, 0.1))  # fmt: skip
    assert at_01["wer"] > 0.0
    tuning = tuned["decode_config"]["tuning"]
    assert tuning["wer_by_scale"] == {"0.1": pytest.approx(at_01["wer"]), "1": 0.0}
    assert tuning["best"] == 1.0 and tuned["wer"] == 0.0 and tuned["decode_config"]["acoustic_scale"] == "tuned"
    # ties go to the smallest scale; a rerun with the same tuning settings reuses the record
    exact = run(setup, ["exact"], "test", "exact-tuned", tune_cuts=setup["tmp"] / "test.jsonl.gz", tune_scales=(0.5, 1.0))
    assert exact["decode_config"]["tuning"]["best"] == 0.5
    mtime = (setup["tmp"] / "decode" / "result-exact-tuned.json").stat().st_mtime_ns
    run(setup, ["exact"], "test", "exact-tuned", tune_cuts=setup["tmp"] / "test.jsonl.gz", tune_scales=(0.5, 1.0))
    assert (setup["tmp"] / "decode" / "result-exact-tuned.json").stat().st_mtime_ns == mtime


def test_word_penalty_tuned_with_the_acoustic_scale(setup) -> None:
    """A prohibitive penalty deletes words; the grid keeps 0, records both, and a fixed penalty decodes as
    the tuning's cell of the same settings."""
    tuned = run(setup, ["exact", "swapped-weak"], "test", "ens-wip", tune_cuts=setup["tmp"] / "test.jsonl.gz",
                tune_scales=(1.0,), tune_penalties=(0.0, 100.0))  # fmt: skip
    tuning = tuned["decode_config"]["tuning"]
    assert tuning["best"] == 1.0 and tuning["best_word_penalty"] == 0.0 and tuned["wer"] == 0.0
    assert tuned["decode_config"]["word_penalty"] == "tuned"
    assert tuned["decode_config"]["tune_word_penalties"] == [0.0, 100.0]
    assert tuning["wer_by_penalty"]["0"] == {"1": 0.0} and tuning["wer_by_penalty"]["100"]["1"] > 0.5
    fixed = run(setup, ["exact", "swapped-weak"], "test", "ens-wip100", acoustic_scale=1.0, word_penalty=100.0)
    assert fixed["wer"] == pytest.approx(tuning["wer_by_penalty"]["100"]["1"]) and fixed["del"] > fixed["sub"]
    assert fixed["decode_config"]["word_penalty"] == 100.0


def test_unlabelled_cuts_score_wer_and_unreadable_cuts_are_skipped(setup) -> None:
    result = run(setup, ["exact"], "mixed", "mixed")
    assert result["frame_acc"] is None
    assert (result["sub"], result["ins"], result["del"], result["num_words"], result["num_utts"]) == (1, 1, 1, 6, 3)
    assert result["wer"] == pytest.approx(3 / 6)
    assert result["num_skipped"] == 1
    skipped = (setup["tmp"] / "decode" / "skipped-mixed.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("lost\t")


def test_rerun_is_skipped_unless_settings_change_or_forced(setup) -> None:
    first = run(setup, ["exact"], "test", "again")
    path = setup["tmp"] / "decode" / "result-again.json"
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))  # an older stamp: any rewrite shows
    stamp = path.stat().st_mtime_ns
    assert run(setup, ["exact"], "test", "again", num_jobs=3, batch_size=1) == first  # same search, other jobs
    assert path.stat().st_mtime_ns == stamp
    assert run(setup, ["exact"], "test", "again", force=True)["wer"] == 0.0
    assert path.stat().st_mtime_ns != stamp
    stamp = path.stat().st_mtime_ns
    assert run(setup, ["exact"], "test", "again", beam=10.0)["decode_config"]["beam"] == 10.0
    assert path.stat().st_mtime_ns != stamp


def test_cached_graph_without_lm_cuts_and_clear_errors(setup, tmp_path) -> None:
    result = run(setup, ["exact"], "test", "cached-graph", lm_cuts=None)
    assert result["wer"] == 0.0 and result["decode_config"]["lm_order"] == 2
    make_lang(tmp_path)  # a lang dir without a graph
    with pytest.raises(FileNotFoundError, match=r"HCLG-<key>.fst of a 2-gram LM.*lm_cuts"):
        run(setup, ["exact"], "test", "nograph", lm_cuts=None, lang_dir=tmp_path / "lang")
    (tmp_path / "short_counts.txt").write_text("5\n6\n")
    with pytest.raises(ValueError, match="short_counts.txt has 2"):
        run(setup, ["exact"], "test", "badcounts", pdf_counts=tmp_path / "short_counts.txt")
    with pytest.raises(FileNotFoundError, match="nosuch.txt"):
        run(setup, ["exact"], "test", "nocounts", pdf_counts=tmp_path / "nosuch.txt")


def test_cli_end_to_end(setup, capsys) -> None:
    tmp = setup["tmp"]
    out = tmp / "cli"
    argv = ["decode", "--models", str(setup["models"]["exact"]), "--cuts", str(tmp / "test.jsonl.gz"),
            "--lang-dir", str(tmp / "lang"), "--pdf-counts", str(tmp / "pdf_counts.txt"),
            "--lm-cuts", str(tmp / "train.jsonl.gz"), "--lm-order", "2", "--output-dir", str(out),
            "--role", "teacher", "--device", "cpu", "--nj", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "exact: WER 0.00% [0 sub 0 ins 0 del / 5 words], frame acc" in capsys.readouterr().out
    result = json.loads((out / "result-exact.json").read_text())
    assert set(result) == set(FIELD_NAMES) and result["decode_config"]["num_jobs"] == 2
    assert result["role"] == "teacher" and result["test_set"] == str(tmp / "test.jsonl.gz")
    for prefix in ("recogs", "errs", "wer-summary", "skipped"):
        assert (out / f"{prefix}-exact.txt").is_file()
    assert main([*argv[:-4], "--pdf-counts", str(tmp / "nosuch.txt")]) == 1


def test_default_name() -> None:
    assert default_name([Path("exp/x/teacher-0/best-valid-acc.pt")]) == "teacher-0"
    assert default_name([Path("a/t0.pt"), Path("a/t1.pt")]) == "ensemble"
    assert default_name([Path("model.pt")]) == "model"


def test_nan_features_are_skipped_and_recorded(setup, caplog) -> None:
    """A cut with NaN features: no empty hypothesis scored, num_skipped 1, the warning names the cut."""
    writer = NumpyFilesWriter(setup["tmp"] / "storage-nan")
    good = make_cut(writer, setup["lang"], "good", ["one", "two"], "one two")
    bad = make_cut(writer, setup["lang"], "nan-cut", ["two", "three"], "two three")
    feats = bad.load_features().copy()
    feats[2, 1] = np.nan
    bad.features.storage_key = writer.write("nan-cut-poisoned", feats)
    CutSet.from_cuts([good, bad]).to_file(setup["tmp"] / "nan.jsonl.gz")
    with caplog.at_level("WARNING"):
        result = run(setup, ["exact"], "nan", "nan")
    assert result["num_skipped"] == 1 and result["num_utts"] == 1 and result["wer"] == 0.0
    assert result["num_words"] == 2  # the skipped cut's words are not counted as deletions
    skipped = (setup["tmp"] / "decode" / "skipped-nan.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("nan-cut\t") and "not finite" in skipped[0]
    assert any("nan-cut" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_skipped_cuts_are_shown_in_results_md(setup, tmp_path) -> None:
    """decode on a manifest with a lost feature file: num_skipped is recorded and RESULTS.md says so
    (issue 10, item 9)."""
    teacher = run(setup, ["exact"], "mixed", "teacher-0", role="teacher", output_dir=tmp_path / "decode")
    assert teacher["num_skipped"] == 1 and teacher["num_utts"] == 3
    run(setup, ["exact"], "test", "teacher-1", role="teacher", output_dir=tmp_path / "decode")
    markdown = make_report(tmp_path, plot=False)["markdown"]
    assert "**Skipped cuts.** teacher-0: 1 of 4 cuts skipped." in markdown
    assert "teacher-1:" not in markdown.split("## Table 1")[0]  # only decodings that skipped cuts are named
    assert "**Skipped cuts.**" in (tmp_path / "RESULTS.md").read_text()


def test_a_second_decode_of_one_name_is_refused(setup, tmp_path, lock_holder) -> None:
    from asr_kd.guard import StageError

    holder = lock_holder(tmp_path / "decode", "decode-locked")
    with pytest.raises(StageError, match=rf"another `asr-kd decode-locked` run \(pid {holder.pid}"):
        run(setup, ["exact"], "test", "locked", output_dir=tmp_path / "decode")
    assert run(setup, ["exact"], "test", "other-name", output_dir=tmp_path / "decode")["wer"] == 0.0  # other names run
    holder.kill()
    holder.wait()
    stale = tmp_path / "decode" / ".tmp.99999.recogs-locked.txt"
    stale.write_text("partial")
    assert run(setup, ["exact"], "test", "locked", output_dir=tmp_path / "decode")["wer"] == 0.0
    assert not stale.exists()
