"""synth_rm on a tiny corpus: split disjointness, tiers, the unlabeled transfer split, clean copies."""

import itertools

import numpy as np
import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from asr_kd.data.features import compute_fbank
from asr_kd.data.grammar import read_grammar
from asr_kd.data.lexicon import read_lexicon
from asr_kd.tts.tiers import SIL
from data_prep.synth_rm import (
    GRAMMAR_FILE,
    PHONE_MAP_FILE,
    SPLITS,
    SynthRmConfig,
    estimated_seconds,
    plan_corpus,
    prepare_synth_rm,
    read_phone_map,
)


def _load(root, split, corpus="synth_rm"):
    """(recordings by id, supervisions list) of a split."""
    recordings = RecordingSet.from_file(root / f"{corpus}_recordings_{split}.jsonl.gz")
    supervisions = SupervisionSet.from_file(root / f"{corpus}_supervisions_{split}.jsonl.gz")
    return {r.id: r for r in recordings}, list(supervisions)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_rm") / "manifests"
    prepare_synth_rm(out, hours=0.02, seed=3, num_jobs=2, clean_copies=True, lm_sentences=300)
    return out


def test_plan_disjoint_voices_and_test_sentences():
    cfg = SynthRmConfig(hours=0.3, seed=5, lm_sentences=2000)
    variants = [f"v{i}" for i in range(40)]
    voices, specs, lm_text = plan_corpus(cfg, variants, read_grammar(GRAMMAR_FILE))
    assert [len(voices[s]) for s in ("train", "dev", "test")] == [30, 4, 6]
    assert not set(voices["train"]) & set(voices["dev"]) and not set(voices["train"]) & set(voices["test"])
    assert voices["transfer"] == voices["train"]
    for split in SPLITS:
        assert {s.variant for s in specs[split]} <= set(voices[split])
    test = {" ".join(s.words) for s in specs["test"]}
    assert len(test) > 50
    for split in ("train", "dev", "transfer"):
        assert not test & {" ".join(s.words) for s in specs[split]}, split
    assert not test & set(lm_text) and len(lm_text) == 2000
    # planned durations follow the shares
    planned = {s: sum(estimated_seconds(u.words, u.rate, u.word_gap) for u in specs[s]) for s in SPLITS}
    for split, share in cfg.split_shares.items():
        assert share * 0.3 * 3600 <= planned[split] < share * 0.3 * 3600 + 8.0


def test_phone_map_is_an_arpabet_like_inventory():
    m = read_phone_map(PHONE_MAP_FILE)
    assert m["I"] == m["I2"] == m["I#"] == "IH" and m["t"] == m["t#"] == "T" and m["0"] == "AA"
    assert 38 <= len(set(m.values())) <= 48 and all(p.isupper() for p in m.values())


def test_tiers_cover_the_audio_and_use_the_inventory(tiny):
    inventory = set(read_phone_map(PHONE_MAP_FILE).values())
    lexicon = read_lexicon(tiny / "synth_rm_lexicon.txt")
    assert {p for prons in lexicon.values() for pron in prons for p in pron} <= inventory
    for split in SPLITS:
        recordings, supervisions = _load(tiny, split)
        assert len(recordings) == len(supervisions) > 0
        for sup in supervisions:
            rec = recordings[sup.recording_id]
            assert sf.info(rec.sources[0].source).frames == rec.num_samples
            phones = sup.alignment["phone"]
            assert phones[0].start == 0.0
            assert abs(phones[-1].start + phones[-1].duration - rec.duration) < 1e-6
            for a, b in itertools.pairwise(phones):
                assert a.duration > 0 and abs(a.start + a.duration - b.start) < 1e-6
            assert {p.symbol for p in phones} - {SIL} <= inventory
            words = [w.symbol for w in sup.alignment["word"]]
            assert words == (sup.text or sup.custom["transcript"]).split()
            for word in sup.alignment["word"]:  # each word's spoken phones are a lexicon entry
                pron = tuple(
                    p.symbol
                    for p in phones
                    if word.start - 1e-6 <= p.start < word.end - 1e-6 and p.symbol != SIL
                )
                assert pron in lexicon[word.symbol]


def test_transfer_split_is_unlabeled_and_test_disjoint(tiny):
    _, transfer = _load(tiny, "transfer")
    assert all(s.text is None and s.custom["unlabeled"] and s.custom["transcript"] for s in transfer)
    test = {s.text for s in _load(tiny, "test")[1]}
    lines = (tiny / "synth_rm_lm_text.txt").read_text().splitlines()
    assert len(lines) == 300 and not test & set(lines)
    for split in ("train", "dev"):
        assert not test & {s.text for s in _load(tiny, split)[1]}
    assert not test & {s.custom["transcript"] for s in transfer}
    voices = {split: {s.custom["variant"] for s in _load(tiny, split)[1]} for split in SPLITS}
    assert not voices["test"] & (voices["train"] | voices["dev"]) and not voices["dev"] & voices["train"]


def test_clean_copies_are_aligned_sample_for_sample(tiny):
    for split in SPLITS:
        noisy, supervisions = _load(tiny, split)
        clean, clean_sups = _load(tiny, split, "synth_rm_clean")
        assert [s.id for s in clean_sups] == [s.id for s in supervisions] and len(clean) == len(noisy)
        for sup in supervisions:
            a, _ = sf.read(noisy[sup.id].sources[0].source)
            b, _ = sf.read(clean[sup.id].sources[0].source)
            assert a.shape == b.shape == (noisy[sup.id].num_samples,)
            if sup.custom["noise"] == "clean":
                assert np.array_equal(a, b)
            else:  # noisy = clean + noise: the clean copy explains most of the noisy energy at SNR >= 5 dB
                residual = np.sum((a - b) ** 2) / np.sum(a**2)
                assert residual < 0.5 and np.corrcoef(a, b)[0, 1] > 0.7


def test_no_digital_silence(tiny):
    recordings, supervisions = _load(tiny, "train")
    for sup in supervisions:
        a, _ = sf.read(recordings[sup.id].sources[0].source, dtype="int16")
        # the -60 dB floor: no run of 400 zero samples (one 25 ms fbank window) anywhere
        zero = (a == 0).astype(np.int32)
        assert np.convolve(zero, np.ones(400, np.int32), "valid").max() < 400


def test_features_accept_the_unlabeled_split(tiny, tmp_path):
    stats = compute_fbank(tiny, "synth_rm", tmp_path, splits=["transfer"], device="cpu")
    _, transfer = _load(tiny, "transfer")
    assert stats["transfer"]["num_cuts"] == len(transfer) and stats["transfer"]["num_skipped"] == 0


def test_rerun_skips_and_other_config_is_refused(tiny, tmp_path):
    again = prepare_synth_rm(tiny, hours=0.02, seed=3, clean_copies=True, lm_sentences=300)
    assert len(again["train"]["supervisions"]) == len(_load(tiny, "train")[1])
    with pytest.raises(ValueError, match="another configuration"):
        prepare_synth_rm(tiny, hours=0.02, seed=4, clean_copies=True, lm_sentences=300)
    grammar = tmp_path / "grammar.txt"
    grammar.write_text(GRAMMAR_FILE.read_text() + "> where is $SHIP now\n")
    with pytest.raises(ValueError, match="grammar_sha256"):
        prepare_synth_rm(tiny, hours=0.02, seed=3, clean_copies=True, lm_sentences=300, grammar_path=grammar)
