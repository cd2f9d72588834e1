"""The oracle start of the aligner (``MonoConfig(init="reference")``, ``asr-kd align --init-from-reference``):
reference phone tiers turned into state-level labels, and a ladder trained from them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, Features, MonoCut, NumpyHdf5Writer, SupervisionSegment
from lhotse.supervision import AlignmentItem

from asr_kd.align.stage import align_corpus
from asr_kd.align.train_mono import MonoConfig, reference_labels
from asr_kd.data.lang import Lang, prepare_lang

CORPUS = "toy"
WORDS = {"A": "a", "B": "b", "C": "c"}
CFG = MonoConfig(num_iters=3, realign_iters=(1, 2), total_gauss=22, max_utts=100)


@pytest.fixture(scope="module")
def lang(tmp_path_factory) -> Lang:
    root = tmp_path_factory.mktemp("ref-lang")
    (root / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()))
    prepare_lang(root / "lexicon.txt", root / "lang", num_states=3, num_sil_states=1)
    return Lang.load(root / "lang")


def test_reference_labels_split_each_phone_evenly_over_its_states(lang) -> None:
    # SIL 0-20 ms (2 frames, 1 state), a 20-70 ms (5 frames -> 2, 2, 1), b 70-90 ms (2 frames -> 1, 1, 0)
    items = [AlignmentItem("SIL", 1.00, 0.02), AlignmentItem("a", 1.02, 0.05), AlignmentItem("b", 1.07, 0.02)]
    labels = reference_labels(items, 9, lang, offset=1.0)
    assert labels.tolist() == [0, 0, 2, 2, 3, 3, 4, 5, 6]
    assert labels.dtype == np.int32
    mapped = reference_labels(items, 9, lang, offset=1.0, ref_map=lambda s: "c" if s == "b" else s)
    assert mapped.tolist() == [0, 0, 2, 2, 3, 3, 4, 8, 9]


def test_reference_labels_refuse_a_phone_outside_the_lang(lang) -> None:
    with pytest.raises(ValueError, match=r"reference phone 'zz' is not in the lang"):
        reference_labels([AlignmentItem("zz", 0.0, 0.05)], 5, lang)


def _write_cuts(cuts_dir: Path, split: str, num_cuts: int, seed: int, with_tiers: bool = True) -> None:
    """Cuts whose fbank frames are phone-dependent means + noise, with word transcripts and phone tiers."""
    rng = np.random.default_rng(seed)
    means = {p: np.random.default_rng(i).normal(0, 3, 80) for i, p in enumerate(("SIL", *WORDS.values()))}
    cuts = []
    with NumpyHdf5Writer(cuts_dir / f"{CORPUS}_feats_{split}.h5") as writer:
        for i in range(num_cuts):
            cut_id = f"{split}-{i:04d}"
            words = [str(w) for w in rng.choice(list(WORDS), size=int(rng.integers(2, 5)))]
            phones = ["SIL", *(WORDS[w] for w in words), "SIL"]
            lengths = [int(rng.integers(6, 16)) for _ in phones]
            feats = np.concatenate([means[p] + rng.normal(0, 1.5, (n, 80)) for p, n in zip(phones, lengths)])
            feats = feats.astype(np.float32)
            num_frames = feats.shape[0]
            features = Features(
                type="fbank", num_frames=num_frames, num_features=80, frame_shift=0.01, sampling_rate=16000,
                start=0.0, duration=num_frames * 0.01, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=writer.write(cut_id, feats),
            )  # fmt: skip
            starts = np.cumsum([0, *lengths[:-1]]) * 0.01
            tier = [AlignmentItem(p, float(s), n * 0.01) for p, s, n in zip(phones, starts, lengths)]
            sup = SupervisionSegment(
                cut_id,
                cut_id,
                0.0,
                num_frames * 0.01,
                text=" ".join(words),
                alignment={"phone": tier} if with_tiers else None,
            )
            cuts.append(MonoCut(cut_id, 0.0, num_frames * 0.01, 0, features=features, supervisions=[sup]))
    CutSet.from_cuts(cuts).to_file(cuts_dir / f"{CORPUS}_cuts_{split}.jsonl.gz")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ref-init")
    (root / "fbank").mkdir()
    _write_cuts(root / "fbank", "train", 16, 0)
    _write_cuts(root / "fbank", "dev", 6, 1)
    (root / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()))
    prepare_lang(root / "lexicon.txt", root / "lang", num_states=3, num_sil_states=1)
    return root


def _align(root: Path, out: Path, cfg: MonoConfig) -> dict:
    return align_corpus(
        root / "fbank",
        CORPUS,
        root / "lang",
        out / "ali",
        out / "exp",
        splits=("train", "dev"),
        device="cpu",
        config=cfg,
    )


def test_reference_start_trains_an_aligner_close_to_the_truth(corpus, tmp_path) -> None:
    report = _align(corpus, tmp_path / "ref", replace(CFG, init="reference"))
    # frames are phone means + noise, 6-16 frames per phone: the model from the truth aligns dev almost exactly
    assert report["splits"]["dev"]["frame_agreement"] >= 0.97
    assert report["splits"]["dev"]["boundary_within_20ms"] >= 0.95
    flat = _align(corpus, tmp_path / "flat", CFG)  # the same schedule from the flat start: 89% and 56% here
    assert (
        flat["splits"]["dev"]["boundary_within_20ms"] < report["splits"]["dev"]["boundary_within_20ms"] - 0.2
    )
    config = (tmp_path / "ref/exp/config.json").read_text()
    assert '"init": "reference"' in config  # the oracle is part of the aligner's recorded config


def test_reference_start_needs_reference_tiers(tmp_path) -> None:
    (tmp_path / "fbank").mkdir()
    _write_cuts(tmp_path / "fbank", "train", 3, 0, with_tiers=False)
    (tmp_path / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()))
    prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang", num_states=3, num_sil_states=1)
    with pytest.raises(
        ValueError, match=r"cut train-0000: init 'reference' needs a reference 'phone' alignment"
    ):
        align_corpus(
            tmp_path / "fbank",
            CORPUS,
            tmp_path / "lang",
            tmp_path / "ali",
            tmp_path / "exp",
            splits=("train",),
            device="cpu",
            config=replace(CFG, init="reference"),
        )


def test_boost_silence_gives_the_monophone_realignment_more_silence(corpus, tmp_path, lang) -> None:
    from asr_kd.align.stage import _load_many, _read_cuts
    from asr_kd.align.train_mono import realign, train_mono

    def silence_frames(boost: float) -> int:
        skipped: dict = {}
        utts = _load_many(list(_read_cuts(corpus / "fbank", CORPUS, "train")), lang, skipped, "load")
        cfg = replace(CFG, boost_silence=boost)
        gmm = train_mono(utts, lang, replace(cfg, boost_silence=1.0), "cpu")
        realign(gmm, utts, cfg, "cpu", 1, lang)
        return sum(int((u.labels == 0).sum()) for u in utts)  # pdf 0: SIL's one state

    plain, boosted = silence_frames(1.0), silence_frames(1e4)
    assert boosted >= plain + 10, (plain, boosted)  # 235 and 263 frames here
    with pytest.raises(ValueError, match="boost_silence needs the lang"):
        realign(None, [], replace(CFG, boost_silence=2.0), "cpu", 1)


def test_monophones_on_a_subset_then_align_every_training_cut(corpus, tmp_path, lang) -> None:
    from asr_kd.align.stage import _load_many, _read_cuts, train_monophones
    from asr_kd.align.train_mono import realign

    skipped: dict = {}
    utts = _load_many(list(_read_cuts(corpus / "fbank", CORPUS, "train")), lang, skipped, "load")
    cfg = replace(CFG, mono_utts=6)
    gmm, subset = train_monophones(list(utts), lang, cfg, "cpu", 1, skipped, realign_all=False)
    assert len(subset) == 6 and len({u.id for u in subset}) == 6
    gmm, aligned = train_monophones(list(utts), lang, cfg, "cpu", 1, skipped)
    assert [u.id for u in aligned] == [u.id for u in utts] and not skipped  # the other 10 cuts aligned too
    labels = [u.labels.copy() for u in aligned]
    assert all(len(lab) == u.feats.shape[0] for lab, u in zip(labels, aligned))
    realign(gmm, aligned, cfg, "cpu", 1, lang)  # the labels are the monophones' alignment of every cut
    assert all(np.array_equal(lab, u.labels) for lab, u in zip(labels, aligned))
    # the stage: the ladder on a 6-cut monophone subset still aligns dev close to the full-data ladder
    report = _align(corpus, tmp_path / "subset", replace(cfg, mono_utts=6))
    full = _align(corpus, tmp_path / "full", CFG)
    assert report["splits"]["dev"]["frame_agreement"] >= full["splits"]["dev"]["frame_agreement"] - 0.05
    assert '"mono_utts": 6' in (tmp_path / "subset/exp/config.json").read_text()
