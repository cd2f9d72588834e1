import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from asr_kd.data.lexicon import read_lexicon
from asr_kd.tts.espeak import PhoneEvent, Synthesis
from asr_kd.tts.tiers import alignment_tiers
from data_prep.synth_digits import (
    DIGIT_WORDS,
    SynthDigitsConfig,
    plan_split,
    prepare_synth_digits,
    pronunciation_counts,
    split_voice_variants,
)


def _syn(events, num_samples=22050):
    words = ["seven", "oh"]
    return Synthesis(
        audio=np.zeros(num_samples, np.float32),
        sample_rate=22050,
        phones=[PhoneEvent(p, s, w) for p, s, w in events],
        words=words,
    )


def test_alignment_tiers_by_hand():
    # 22050 Hz events -> 16000 Hz samples: round(s * 16000 / 22050)
    events = [
        ("s", 441, 0),  # 320
        ("E", 2205, 0),  # 1600
        ("n", 4410, 0),  # 3200
        ("_", 6615, -1),  # 4800 pause
        ("_:", 7000, -1),  # merged with the pause above
        ("oU", 8820, 1),  # 6400
        ("_", 13230, -1),  # 9600 .. end
        ("_", 22050, -1),  # zero length at the very end: dropped
    ]
    phones, words = alignment_tiers(_syn(events), 16000, 16000)
    got = [(p.symbol, round(p.start * 16000), round(p.duration * 16000)) for p in phones]
    assert got == [
        ("SIL", 0, 320),
        ("s", 320, 1280),
        ("E", 1600, 1600),
        ("n", 3200, 1600),
        ("SIL", 4800, 1600),
        ("oU", 6400, 3200),
        ("SIL", 9600, 6400),
    ]
    assert [(w.symbol, w.start, w.duration) for w in words] == [
        ("SEVEN", 0.02, 0.28),  # s E n: samples 320..4800
        ("OH", 0.4, 0.2),
    ]


def test_alignment_tiers_errors():
    assert alignment_tiers(_syn([]), 16000, 16000).startswith("no_phone_events")
    only_first = [("s", 0, 0), ("_", 5000, -1)]
    assert alignment_tiers(_syn(only_first), 16000, 16000).startswith("word_without_phones")


def test_voice_split_disjoint_and_complete():
    variants = [f"v{i}" for i in range(100)]
    split = split_voice_variants(variants, SynthDigitsConfig(seed=3))
    assert [len(split[s]) for s in ("train", "dev", "test")] == [70, 15, 15]
    assert set(split["train"]) | set(split["dev"]) | set(split["test"]) == set(variants)
    assert split == split_voice_variants(variants, SynthDigitsConfig(seed=3))
    assert split != split_voice_variants(variants, SynthDigitsConfig(seed=4))


def test_plan_split_deterministic_and_in_range():
    cfg = SynthDigitsConfig(seed=5)
    specs = plan_split("dev", ["m1", "f2"], 300.0, cfg)
    assert specs == plan_split("dev", ["m1", "f2"], 300.0, cfg)
    assert all(1 <= len(s.words) <= 7 and set(s.words) <= set(DIGIT_WORDS) for s in specs)
    assert all(cfg.rate[0] <= s.rate <= cfg.rate[1] and s.variant in ("m1", "f2") for s in specs)
    assert len({s.id for s in specs}) == len(specs)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.wav")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "manifests"
    prepare_synth_digits(out, hours=0.02, seed=11, num_jobs=2)
    return out


def test_prepare_outputs(tiny_corpus):
    for split in ("train", "dev", "test"):
        recs = RecordingSet.from_file(tiny_corpus / f"synth_digits_recordings_{split}.jsonl.gz")
        sups = SupervisionSet.from_file(tiny_corpus / f"synth_digits_supervisions_{split}.jsonl.gz")
        assert len(recs) == len(sups) > 0
        for rec in recs:
            info = sf.info(rec.sources[0].source)
            assert info.samplerate == 16000 and info.frames == rec.num_samples
    lexicon = read_lexicon(tiny_corpus / "synth_digits_lexicon.txt")
    assert set(lexicon) <= set(DIGIT_WORDS)
    assert ("s", "E", "v", "@", "n") in lexicon.get("SEVEN", [("s", "E", "v", "@", "n")])


def test_prepare_deterministic_across_num_jobs(tiny_corpus, tmp_path):
    again = tmp_path / "again"
    prepare_synth_digits(again, hours=0.02, seed=11, num_jobs=1)
    for split in ("train", "dev", "test"):
        name = f"synth_digits_supervisions_{split}.jsonl.gz"
        a = SupervisionSet.from_file(tiny_corpus / name).to_dicts()
        b = SupervisionSet.from_file(again / name).to_dicts()
        assert list(a) == list(b)
    assert _tree_digest(tiny_corpus / "wav") == _tree_digest(again / "wav")


def test_pronunciation_counts_match_lexicon(tiny_corpus):
    sups = SupervisionSet.from_file(tiny_corpus / "synth_digits_supervisions_train.jsonl.gz")
    counts = pronunciation_counts(sups)
    assert sum(sum(c.values()) for c in counts.values()) == sum(len(s.text.split()) for s in sups)


def test_rerun_with_other_config_is_refused(tiny_corpus):
    with pytest.raises(ValueError, match="another configuration.*'hours': \\(0.02, 0.5\\)"):
        prepare_synth_digits(tiny_corpus, hours=0.5, seed=11)


def test_output_is_unchanged_by_the_espeak_corpus_refactor(tiny_corpus):
    """The digests of the tiny corpus (hours 0.02, seed 11) as synth_digits wrote it before its
    synthesis moved to data_prep/espeak_corpus.py: audio, supervisions and lexicon are byte-identical."""
    import json

    assert (
        _tree_digest(tiny_corpus / "wav")
        == "f0ad7a04f72da69721fb09169da0bd693c32cdd641a2d5e9e845b0b5565b080c"
    )
    expected = {
        "train": "9cd02329617a0e3cc959e36bb5d892ede2e7f880a402dcb1118e72ce3d4b8ae9",
        "dev": "7f4ccb29b79a2a4c5007b43dd60c05e28911f990344a8c1103aa5614b50290aa",
        "test": "e10cd2aa7631e947ce0311a03b09d08f44d99b9d2cbe6702b62e6b205bc93201",
    }
    for split, digest in expected.items():
        sups = SupervisionSet.from_file(
            tiny_corpus / f"synth_digits_supervisions_{split}.jsonl.gz"
        ).to_dicts()
        assert (
            hashlib.sha256(json.dumps(list(sups), sort_keys=True).encode()).hexdigest()
            == digest
        ), split
    lexicon = (tiny_corpus / "synth_digits_lexicon.txt").read_bytes()
    assert (
        hashlib.sha256(lexicon).hexdigest()
        == "485d42f13026968a0e3f20c736db14eaafdb36c0e25e0183cffab9b2c81e6716"
    )


def test_config_is_recorded_before_any_split(tmp_path):
    """A run killed after its first split and resumed with other settings must be refused, so the config
    is on disk before anything is synthesized."""
    from data_prep.espeak_corpus import check_config
    from data_prep.synth_digits import SynthDigitsConfig

    path = tmp_path / "synth_digits_prepare_config.json"
    check_config(path, SynthDigitsConfig(hours=0.02, seed=11))
    assert path.is_file()
    check_config(path, SynthDigitsConfig(hours=0.02, seed=11))  # the same settings resume
    with pytest.raises(ValueError, match="another configuration.*'seed': \\(11, 12\\)"):
        check_config(path, SynthDigitsConfig(hours=0.02, seed=12))
