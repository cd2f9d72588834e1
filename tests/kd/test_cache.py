import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut
from lhotse.dataset import SimpleCutSampler
from lhotse.features import Features

from asr_kd.kd.cache import (
    FIELD_DENSE,
    FIELD_IDS,
    FIELD_PROBS,
    CacheMismatchError,
    SoftTargetWriter,
    bytes_per_frame,
    cache_metadata,
    collate_soft_targets,
    densify_topk,
    is_shard_complete,
    load_soft_target_cuts,
    merge_soft_target_shards,
    prepare_cache_dir,
    shard_name,
    shard_paths,
    shard_slice,
    shards_of_rank,
    soft_targets_of,
    write_soft_target_shards,
)

P = 87
FP16_REL, FP16_ABS = 2**-11, 2**-25  # fp16 rounding: half an ulp relative, half the subnormal spacing absolute


def make_cut(i: int, num_frames: int) -> MonoCut:
    duration = round(num_frames * 0.01 + 0.004, 3)  # 0.004 s extra still rounds to num_frames frames
    feats = Features(
        type="fbank", num_frames=num_frames, num_features=80, frame_shift=0.01, sampling_rate=16000, start=0.0,
        duration=duration, storage_type="lilcom_chunky", storage_path="unused", storage_key="0",
        recording_id=f"rec-{i}", channels=0,
    )  # fmt: skip
    return MonoCut(id=f"cut-{i:03d}", start=0.0, duration=duration, channel=0, features=feats)


def posteriors_for(cut) -> torch.Tensor:
    """Deterministic (T, P) ensemble-like posteriors for a cut (peaked rows with a real tail)."""
    g = torch.Generator().manual_seed(int(cut.id.split("-")[1]))
    return torch.softmax(torch.randn(cut.num_frames, P, generator=g) * 3, dim=-1)


CUTS = [make_cut(i, n) for i, n in enumerate([37, 12, 50, 1, 23, 44, 8, 31, 19, 26, 40])]


def by_id(cuts):
    return [posteriors_for(c) for c in cuts]


def new_cache(tmp_path: Path, name="cache", storage="topk", k=4, temperature=2.0, **kwargs) -> Path:
    teachers = []
    for i in range(2):
        ckpt = tmp_path / f"teacher-{i}.pt"
        if not ckpt.exists():
            ckpt.write_bytes(f"checkpoint {i}".encode())
        teachers.append(ckpt)
    meta = cache_metadata(teachers, temperature=temperature, num_pdfs=P, storage=storage, k=k,
                          feature_config={"type": "fbank", "num_mel_bins": 80}, **kwargs)  # fmt: skip
    cache_dir = tmp_path / name
    prepare_cache_dir(cache_dir, meta)
    return cache_dir


def build(cache_dir, cuts=CUTS, num_shards=1, world_size=1, fn=by_id, batch_size=3):
    for rank in range(world_size):
        write_soft_target_shards(cuts, fn, cache_dir, "train", num_shards, rank, world_size, batch_size)
    merge_soft_target_shards(cache_dir, "train", num_shards, cuts=cuts)


def stored_content(cache_dir) -> dict:
    """{cut id: raw stored arrays} of the merged train split."""
    out = {}
    for cut in load_soft_target_cuts(cache_dir, "train"):
        names = [n for n in (FIELD_DENSE, FIELD_IDS, FIELD_PROBS) if cut.has_custom(n)]
        out[cut.id] = {n: cut.load_custom(n) for n in names}
    return out


def assert_same_content(a: dict, b: dict):
    assert list(a) == list(b)
    for cid in a:
        assert a[cid].keys() == b[cid].keys()
        for n in a[cid]:
            assert a[cid][n].dtype == b[cid][n].dtype
            np.testing.assert_array_equal(a[cid][n], b[cid][n])


def test_topk_round_trip(tmp_path):
    cache_dir = new_cache(tmp_path, k=4)
    build(cache_dir)
    cuts = load_soft_target_cuts(cache_dir, "train", expected={"temperature": 2.0, "k": 4, "num_pdfs": P})
    assert [c.id for c in cuts] == sorted(c.id for c in CUTS)
    for cut in cuts:
        p = posteriors_for(cut)
        top_p, top_ids = torch.topk(p, 4, dim=-1)
        ids, probs = cut.load_custom(FIELD_IDS), cut.load_custom(FIELD_PROBS)
        assert ids.dtype == np.int16 and probs.dtype == np.float16 and ids.shape == (cut.num_frames, 4)
        np.testing.assert_array_equal(ids, top_ids.numpy())  # ids exact
        assert np.all(np.abs(probs - top_p.numpy()) <= FP16_REL * top_p.numpy() + FP16_ABS)
        dense = soft_targets_of(cut)
        assert dense.dtype == np.float32 and dense.shape == (cut.num_frames, P)
        np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-5)  # mass accounted for
        # the rule: top-k as stored, each other pdf (1 - sum top-k) / (P - k)
        tail = (1.0 - probs.astype(np.float32).sum(axis=1, keepdims=True)) / (P - 4)
        expected = np.repeat(tail, P, axis=1)
        np.put_along_axis(expected, ids.astype(np.int64), probs.astype(np.float32), axis=1)
        np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-7)
        # the tail keeps the teacher's tail mass (up to fp16 rounding of the top-k)
        tail_mass = 1.0 - np.take_along_axis(dense, ids.astype(np.int64), axis=1).sum(axis=1)
        np.testing.assert_allclose(tail_mass, 1.0 - top_p.sum(-1).numpy(), atol=4 * 2**-11)


def test_dense_round_trip(tmp_path):
    cache_dir = new_cache(tmp_path, storage="dense", k=None)
    build(cache_dir)
    for cut in load_soft_target_cuts(cache_dir, "train", expected={"storage": "dense"}):
        p = posteriors_for(cut).numpy()
        raw = cut.load_custom(FIELD_DENSE)
        assert raw.dtype == np.float16 and raw.shape == (cut.num_frames, P)
        assert np.all(np.abs(raw - p) <= FP16_REL * p + FP16_ABS)
        dense = soft_targets_of(cut)
        np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(dense, p, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize(
    "expected, message",
    [
        ({"temperature": 4.0}, "cache temperature 2.0 != requested 4.0"),
        ({"combination": "geometric"}, "cache combination 'arithmetic' != requested 'geometric'"),
        ({"weights": [0.25, 0.75]}, "cache weights"),
        ({"storage": "dense"}, "cache storage 'topk' != requested 'dense'"),
        ({"k": 16}, "cache k 4 != requested 16"),
        ({"num_pdfs": 90}, "cache num_pdfs 87 != requested 90"),
        ({"dtype": "float32"}, "cache dtype"),
        ({"feature_config": {"type": "fbank", "num_mel_bins": 40}}, "cache feature_config_sha256"),
        ({"teachers": [{"path": "a", "sha256": "0" * 64}] * 2}, "teacher 0 sha256"),
        ({"teachers": [{"path": "a", "sha256": "0" * 64}]}, "cache has 2 teachers != requested 1"),
    ],
)
def test_metadata_mismatch_names_the_field(tmp_path, expected, message):
    cache_dir = new_cache(tmp_path)
    build(cache_dir)
    with pytest.raises(CacheMismatchError, match=message.replace("[", r"\[")):
        load_soft_target_cuts(cache_dir, "train", expected=expected)


def test_metadata_matches_itself_and_teacher_paths(tmp_path):
    cache_dir = new_cache(tmp_path)
    build(cache_dir)
    same = cache_metadata([tmp_path / "teacher-0.pt", tmp_path / "teacher-1.pt"], 2.0, P, k=4,
                          feature_config={"num_mel_bins": 80, "type": "fbank"})  # fmt: skip
    assert len(load_soft_target_cuts(cache_dir, "train", expected=same)) == len(CUTS)
    assert len(load_soft_target_cuts(cache_dir, "train", expected={"weights": None})) == len(CUTS)  # uniform
    # teachers given as checkpoint paths are compared by content: a retrained teacher 1 is detected
    (tmp_path / "teacher-1.pt").write_bytes(b"retrained")
    with pytest.raises(CacheMismatchError, match="teacher 1 sha256"):
        teachers = [tmp_path / "teacher-0.pt", tmp_path / "teacher-1.pt"]
        load_soft_target_cuts(cache_dir, "train", expected={"teachers": teachers})


def test_cuts_checked_against_the_cache(tmp_path):
    cache_dir = new_cache(tmp_path)
    build(cache_dir, cuts=CUTS[:-1])
    subset = CutSet.from_cuts(CUTS[3:6])
    attached = load_soft_target_cuts(cache_dir, "train", cuts=subset)
    assert [c.id for c in attached] == [c.id for c in subset]  # the given cuts, in their order
    np.testing.assert_array_equal(soft_targets_of(attached[0]).shape, (CUTS[3].num_frames, P))
    with pytest.raises(CacheMismatchError, match=f"cut {CUTS[-1].id} has no soft targets"):
        load_soft_target_cuts(cache_dir, "train", cuts=CUTS)
    longer = make_cut(2, 51)  # same id as CUTS[2] (50 frames)
    with pytest.raises(CacheMismatchError, match="cut-002 has 51 frames but its soft targets have 50"):
        load_soft_target_cuts(cache_dir, "train", cuts=[longer])


def test_resuming_with_another_config_is_refused(tmp_path):
    new_cache(tmp_path, temperature=2.0)
    with pytest.raises(CacheMismatchError, match="cache temperature 2.0 != requested 3.0"):
        new_cache(tmp_path, temperature=3.0)


def _raise_on_call(n_ok: int):
    calls = []

    def fn(cuts):
        calls.append([c.id for c in cuts])
        if len(calls) > n_ok:
            raise RuntimeError("simulated crash")
        return by_id(cuts)

    return fn, calls


def test_killed_writer_leaves_nothing_complete_and_resume_is_identical(tmp_path):
    reference = new_cache(tmp_path, name="reference")
    build(reference, num_shards=3)
    cache_dir = new_cache(tmp_path)
    # shard 0 (4 cuts) = 2 calls of batch_size 3; crash on the 2nd call of shard 1, after 3 cuts of it were written
    fn, calls = _raise_on_call(3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_soft_target_shards(CUTS, fn, cache_dir, "train", num_shards=3, batch_size=3)
    names = [shard_name("train", s, 3) for s in range(3)]
    assert is_shard_complete(cache_dir, names[0])
    assert not is_shard_complete(cache_dir, names[1])
    files = sorted(p.name for p in (cache_dir / "shards").iterdir())
    assert files == sorted(p.name for p in shard_paths(cache_dir, names[0]))
    with pytest.raises(RuntimeError, match="not complete"):
        merge_soft_target_shards(cache_dir, "train", 3)
    # what a SIGKILL leaves: a temporary file, and an .h5 renamed just before its manifest could be written
    (cache_dir / "shards" / f".tmp.99999.soft_targets_{names[1]}.h5").write_bytes(b"partial")
    shard_paths(cache_dir, names[2])[0].write_bytes(b"no manifest")
    fn, calls = _raise_on_call(10**6)
    written = write_soft_target_shards(CUTS, fn, cache_dir, "train", num_shards=3, batch_size=3)
    assert written == names[1:]  # shard 0 skipped
    assert sorted(sum(calls, [])) == sorted(c.id for c in CUTS)[4:]  # only the cuts of shards 1 and 2 recomputed
    assert not list((cache_dir / "shards").glob(".tmp.*"))
    merge_soft_target_shards(cache_dir, "train", 3)
    assert_same_content(stored_content(cache_dir), stored_content(reference))


KILLED_WRITER = """
import os, sys, torch
from lhotse import CutSet
from asr_kd.kd.cache import write_soft_target_shards
calls = []
def posteriors_fn(cuts):
    if calls:
        os._exit(1)  # like SIGKILL: no exception handler, no cleanup
    calls.append(1)
    return [torch.softmax(torch.randn(c.num_frames, 87), -1) for c in cuts]
write_soft_target_shards(CutSet.from_file(sys.argv[1]), posteriors_fn, sys.argv[2], "train", batch_size=3)
"""


def test_hard_killed_process_then_resume(tmp_path):
    cache_dir = new_cache(tmp_path)
    CutSet.from_cuts(CUTS).to_file(tmp_path / "cuts.jsonl.gz")
    cmd = [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "cuts.jsonl.gz"), str(cache_dir)]
    assert subprocess.run(cmd, timeout=120).returncode == 1
    shards = cache_dir / "shards"
    assert not (shards.exists() and list(shards.iterdir()))  # the shard was built in memory: nothing on disk
    build(cache_dir)
    reference = new_cache(tmp_path, name="reference")
    build(reference)
    assert_same_content(stored_content(cache_dir), stored_content(reference))
    assert sorted(p.name for p in (cache_dir / "shards").iterdir()) == sorted(
        p.name for p in shard_paths(cache_dir, "train.00000-of-00001")
    )


def test_two_ranks_then_merge_equals_single_writer(tmp_path):
    single = new_cache(tmp_path, name="single")
    build(single, num_shards=1)
    sharded = new_cache(tmp_path, name="sharded")
    # rank 1 first: order of ranks does not matter; each writes shards rank, rank + 2
    for rank in (1, 0):
        written = write_soft_target_shards(CUTS, by_id, sharded, "train", num_shards=4, rank=rank, world_size=2)
        assert written == [shard_name("train", s, 4) for s in shards_of_rank(rank, 2, 4)]
    merge_soft_target_shards(sharded, "train", 4, cuts=CUTS)
    assert_same_content(stored_content(sharded), stored_content(single))
    meta_single = load_soft_target_cuts(single, "train")  # metadata ids hash / counts agree too
    splits = [json.loads((d / "metadata.json").read_text())["splits"]["train"] for d in (single, sharded)]
    assert splits[0]["cut_ids_sha256"] == splits[1]["cut_ids_sha256"]
    assert splits[0]["num_frames"] == splits[1]["num_frames"] == sum(c.num_frames for c in CUTS)
    assert splits[0]["num_cuts"] == len(meta_single) == len(CUTS)


def test_shard_slices_are_contiguous_and_balanced():
    for n, shards in [(11, 4), (3, 5), (0, 2), (10, 1)]:
        slices = [shard_slice(n, s, shards) for s in range(shards)]
        assert [i for sl in slices for i in range(n)[sl]] == list(range(n))
        sizes = [len(range(n)[sl]) for sl in slices]
        assert max(sizes) - min(sizes) <= 1
    assert shards_of_rank(1, 3, 8) == [1, 4, 7]


def test_sampler_batches_find_their_targets_by_cut_id(tmp_path):
    cache_dir = new_cache(tmp_path, k=16)
    build(cache_dir, num_shards=2)
    cuts = load_soft_target_cuts(cache_dir, "train")
    sampler = SimpleCutSampler(cuts, max_cuts=4, shuffle=True, seed=3)
    seen = []
    for batch in sampler:
        dense = collate_soft_targets(batch)
        sparse = collate_soft_targets(batch, sparse=True)
        assert dense.probs.shape == (len(batch), max(c.num_frames for c in batch), P)
        assert sparse.ids.shape == sparse.probs.shape == (*dense.probs.shape[:2], 16)
        for i, cut in enumerate(batch):
            t = cut.num_frames
            assert dense.num_frames[i] == t
            top_ids = torch.topk(posteriors_for(cut), 16, dim=-1).indices
            assert torch.equal(sparse.ids[i, :t], top_ids)
            assert dense.probs[i, t:].abs().sum() == 0 and sparse.probs[i, t:].abs().sum() == 0
            torch.testing.assert_close(dense.probs[i, :t], densify_topk(sparse.ids[i, :t], sparse.probs[i, :t], P))
            seen.append(cut.id)
    assert sorted(seen) == sorted(c.id for c in CUTS)
    assert collate_soft_targets(cuts.subset(first=2), pad_to=60).probs.shape == (2, 60, P)


@pytest.mark.parametrize("mode, k, expected", [("topk", 1, 4), ("topk", 4, 16), ("topk", 16, 64), ("dense", None, 174)])
def test_bytes_per_frame_matches_file_sizes(tmp_path, mode, k, expected):
    assert bytes_per_frame(mode, k, P) == expected
    cuts = [make_cut(i, 1000) for i in range(8)]
    with SoftTargetWriter(tmp_path, "x", mode, k) as writer:
        for cut in cuts:
            writer.write(cut, posteriors_for(cut))
    size = shard_paths(tmp_path, "x")[0].stat().st_size
    payload = 8000 * expected
    datasets = 8 * (2 if mode == "topk" else 1)
    assert payload <= size <= payload + 1024 * datasets + 8192  # HDF5 headers: ~0.5 KB per dataset here


def test_bytes_per_frame_id_width_and_validation():
    assert bytes_per_frame("topk", 16, 14000) == 64  # the paper's 14,000 pdfs still fit int16
    assert bytes_per_frame("topk", 16, 40000) == 96  # int32 ids
    assert bytes_per_frame("dense", None, 14000) == 28000
    with pytest.raises(ValueError, match="k must be"):
        bytes_per_frame("topk", 100, P)
    with pytest.raises(ValueError, match="storage mode"):
        bytes_per_frame("sparse", 4, P)


def test_writer_rejects_bad_posteriors(tmp_path):
    cut = CUTS[0]
    with SoftTargetWriter(tmp_path, "bad", "topk", 4, num_pdfs=P) as writer:
        with pytest.raises(ValueError, match="not logits"):
            writer.write(cut, torch.randn(cut.num_frames, P))
        with pytest.raises(ValueError, match="not logits"):
            writer.write(cut, torch.full((cut.num_frames, P), float("nan")))
        with pytest.raises(ValueError, match="36 posterior frames != its 37 feature frames"):
            writer.write(cut, posteriors_for(cut)[:-1])
        with pytest.raises(ValueError, match="num_pdfs=87"):
            writer.write(cut, torch.softmax(torch.randn(cut.num_frames, 90), -1))


ENOSPC_TEXT = "No space left on device"


def test_disk_full_while_caching_fails_cleanly_and_the_rerun_resumes(tmp_path, monkeypatch):
    """OSError(28) when shard 1's bytes are written: OutputIOError, nothing of shard 1 left, shard 0 kept;
    the rerun recomputes only shards 1 and 2 and equals an uninterrupted build (issue 10, item 8)."""
    from asr_kd.guard import OutputIOError
    from asr_kd.kd.cache import InMemoryHdf5Writer

    reference = new_cache(tmp_path, name="reference")
    build(reference, num_shards=3)
    cache_dir = new_cache(tmp_path)
    real_save, saves = InMemoryHdf5Writer.save, []

    def full_disk(self, path):
        saves.append(path)
        if len(saves) == 2:
            with open(path, "wb") as f:  # what a full disk leaves: a few bytes, then ENOSPC
                f.write(b"\x89HDF")
            raise OSError(28, ENOSPC_TEXT)
        return real_save(self, path)

    monkeypatch.setattr(InMemoryHdf5Writer, "save", full_disk)
    with pytest.raises(OutputIOError, match=rf"cannot write .*soft_targets_train.00001-of-00003.h5: {ENOSPC_TEXT}"):
        write_soft_target_shards(CUTS, by_id, cache_dir, "train", num_shards=3, batch_size=3)
    names = [shard_name("train", i, 3) for i in range(3)]
    assert is_shard_complete(cache_dir, names[0]) and not is_shard_complete(cache_dir, names[1])
    assert sorted(p.name for p in (cache_dir / "shards").iterdir()) == sorted(p.name for p in shard_paths(cache_dir, names[0]))
    monkeypatch.setattr(InMemoryHdf5Writer, "save", real_save)
    assert write_soft_target_shards(CUTS, by_id, cache_dir, "train", num_shards=3, batch_size=3) == names[1:]
    merge_soft_target_shards(cache_dir, "train", 3)
    assert_same_content(stored_content(cache_dir), stored_content(reference))


FSIZE_LIMITED_BUILD = """
import resource, signal, sys
from lhotse import CutSet
from asr_kd.kd.cache import write_soft_target_shards
from asr_kd.kd.cache.writer import SoftTargetWriter
import torch

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
def fn(cuts):
    return [torch.softmax(torch.arange(c.num_frames * 87, dtype=torch.float32).reshape(c.num_frames, 87).sin(), -1)
            for c in cuts]
write_soft_target_shards(CutSet.from_file(sys.argv[1]), fn, sys.argv[2], "train", num_shards=1, batch_size=3)
"""


@pytest.mark.slow
def test_file_size_limit_while_caching_is_a_clean_error_not_a_crash(tmp_path):
    """A real write failure (RLIMIT_FSIZE, EFBIG) in a child process: a clean error and exit status 1,
    not h5py's segfault (rc 139); nothing of the shard is left; a rerun without the limit completes."""
    cache_dir = new_cache(tmp_path, storage="dense", k=None)
    CutSet.from_cuts(CUTS).to_file(tmp_path / "cuts.jsonl.gz")
    cmd = [sys.executable, "-c", FSIZE_LIMITED_BUILD, str(tmp_path / "cuts.jsonl.gz"), str(cache_dir), "8192"]
    proc = subprocess.run(cmd, timeout=120, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "OutputIOError" in proc.stderr and "File too large" in proc.stderr
    shards = cache_dir / "shards"
    assert not (shards.exists() and list(shards.iterdir()))
    cmd[-1] = str(1 << 30)
    assert subprocess.run(cmd, timeout=120).returncode == 0
    assert is_shard_complete(cache_dir, shard_name("train", 0, 1))


def test_a_second_writer_of_a_cache_is_refused(tmp_path, lock_holder):
    """Two cache runs on one dir: the second is refused by the lock, naming the holder, instead of failing
    on the first run's temporary shard (issue 10, item 9)."""
    from asr_kd.guard import StageError

    cache_dir = new_cache(tmp_path)
    holder = lock_holder(cache_dir, "cache-shard-train.00000-of-00001")
    with pytest.raises(StageError, match=rf"another `asr-kd cache-shard-train.00000-of-00001` run \(pid {holder.pid}"):
        build(cache_dir)
    holder.kill()
    holder.wait()
    build(cache_dir)  # the lock died with its holder
    assert is_shard_complete(cache_dir, "train.00000-of-00001")
