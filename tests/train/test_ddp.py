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
