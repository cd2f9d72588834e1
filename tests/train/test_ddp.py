"""DDP on CPU: two gloo processes started as torchrun would start them (RANK / WORLD_SIZE / LOCAL_RANK)."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import asr_kd.trainer.loop as train_module
from asr_kd.models import load_checkpoint


def _worker(rank: int, world_size: int, cfg, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    models = []
    build = train_module.build_model
    train_module.build_model = lambda config: models.append(build(config)) or models[-1]
    train_module.train(cfg)  # sees the torchrun variables: this process is one rank
    torch.save(models[0].state_dict(), Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_end_with_identical_weights(tmp_path, frame_data):
    corpus = frame_data.make_corpus(tmp_path / "corpus")
    cfg = frame_data.tiny_config(corpus, tmp_path / "exp", num_epochs=2, save_every_n=0)
    mp.spawn(_worker, args=(2, cfg, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    final = load_checkpoint(tmp_path / "exp/epoch-2.pt")
    assert final.extra["train_config"]["exp_dir"] == str(tmp_path / "exp")
    for name, weight in rank0.items():
        torch.testing.assert_close(rank1[name], weight, rtol=0, atol=0)
        torch.testing.assert_close(final.state_dict[name], weight, rtol=0, atol=0)
    # each rank trained on half of the batches; both ranks' RNG states were saved
    single_process_steps = 2 * 11  # 11 batches per epoch on one process (tests/train/test_trainer.py)
    assert final.extra["state"]["step"] <= single_process_steps // 2 + 2
    assert len(final.extra["rng"]) == 2
    assert (tmp_path / "exp/done").is_file()
    assert sorted(p.name.endswith("-rank1") for p in (tmp_path / "exp/log").iterdir()) == [False, True]


def _decide(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank of a gloo group: only rank 1 has an error; each rank writes what it raised."""
    import torch.distributed as dist

    from asr_kd.trainer.session import raise_on_any_rank

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        raise_on_any_rank(None, world_size, torch.device("cpu"))  # no error anywhere: returns on every rank
        try:
            raise_on_any_rank("bad cut x" if rank == 1 else None, world_size, torch.device("cpu"))
            outcome = "returned"
        except FloatingPointError as e:
            outcome = f"raised: {e}"
        (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def _run_ranks(target, args: tuple, world_size: int = 2, timeout: float = 120) -> None:
    """Start ``world_size`` spawned processes ``target(rank, world_size, *args)``; fail (and end them) when
    they are not all finished after ``timeout`` seconds: a rank waiting for ever in a collective."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(rank, world_size, *args)) for rank in range(world_size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for rank in hung:
        procs[rank].kill()
        procs[rank].join()
    assert not hung, f"ranks {hung} still running after {timeout} s (waiting in a collective)"


def test_raise_on_any_rank_in_one_process():
    from asr_kd.trainer.session import raise_on_any_rank

    raise_on_any_rank(None, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^bad cut x$"):  # one process: the message as it is
        raise_on_any_rank("bad cut x", 1, torch.device("cpu"), ValueError)


@pytest.mark.slow
def test_an_error_on_one_rank_is_raised_on_every_rank(tmp_path):
    _run_ranks(_decide, (_free_port(), str(tmp_path)), timeout=60)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "raised: rank 1: bad cut x"


def _train_rank(rank: int, world_size: int, cfg, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    try:
        train_module.train(cfg)
        outcome = "finished"
    except FloatingPointError as e:
        outcome = f"raised: {e}"
    (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)


@pytest.mark.slow
def test_nonfinite_validation_loss_on_one_rank_stops_every_rank(tmp_path, frame_data):
    corpus = frame_data.make_corpus(tmp_path / "corpus", num_train=24, num_valid=8)
    # a validation cut so large that the model's outputs overflow, on one of the two ranks
    bad = frame_data.poison_features(corpus / "valid.jsonl.gz", 4, 3e38, frame=slice(3, 8))
    cfg = frame_data.tiny_config(corpus, tmp_path / "exp", num_epochs=1, save_every_n=0)
    _run_ranks(_train_rank, (cfg, _free_port(), str(tmp_path)), timeout=180)
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    # the same error on both ranks, from the one rank that validated the cut
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].startswith("raised: rank ") and "validation loss is not finite" in outcomes[0]
    assert f"'{bad}'" in outcomes[0] and outcomes[0].count("validation loss") == 1
    assert not (tmp_path / "exp" / "done").exists() and not (tmp_path / "exp" / "best-valid-acc.pt").exists()


@pytest.mark.slow
def test_skipped_training_cuts_under_ddp(tmp_path, frame_data):
    """A batch that one rank is left without stops every rank (none waits in DDP's forward); the resumable
    state and the skip list hold the cuts every rank skipped (they held rank 0's only)."""
    import math

    def run(name: str, poisoned: tuple[int, ...]) -> tuple[list[str], list[str], Path]:
        corpus = frame_data.make_corpus(tmp_path / name / "corpus", num_train=24, num_valid=8)
        bad = sorted(frame_data.poison_features(corpus / "train.jsonl.gz", i, math.nan) for i in poisoned)
        exp = tmp_path / name / "exp"
        cfg = frame_data.tiny_config(corpus, exp, num_epochs=1, save_every_n=0, max_skipped_share=0.25)
        _run_ranks(_train_rank, (cfg, _free_port(), str(tmp_path / name)), timeout=180)
        return [(tmp_path / name / f"rank{rank}.txt").read_text() for rank in (0, 1)], bad, exp

    # 3 of rank 1's cuts, 2 of rank 0's, which fill one of its batches: every rank stops with that error
    outcomes, _, _ = run("empty-batch", (1, 6, 11, 16, 21))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].startswith("raised: rank 0: epoch 1 batch 2: every cut has non-finite features")
    # 3 of rank 1's cuts and 1 of rank 0's: the epoch ends
    outcomes, bad, exp = run("finished", (1, 6, 11, 21))
    assert outcomes == ["finished", "finished"]
    state = torch.load(exp / "epoch-1.pt", weights_only=True)["extra"]["state"]
    assert sorted(state["skipped"]) == bad  # a resumed run counts the cuts either rank skipped before
    assert (exp / "skipped_training.txt").read_text().count("\n") == 4
