"""Frame-level training shared by teachers and students: CE on forced-alignment pdf ids (or a plugged loss).

Usage::

    from asr_kd.models import ModelConfig
    from asr_kd.trainer import DataConfig, TrainConfig, train

    train(TrainConfig(exp_dir="exp/my_recipe/teacher-0", seed=1,
                      model=ModelConfig(arch="tdnn", size="teacher", num_pdfs=87),
                      data=DataConfig(train_cuts="data/ali/my_corpus_cuts_train.jsonl.gz",
                                      valid_cuts="data/ali/my_corpus_cuts_dev.jsonl.gz")))
    # several processes / GPUs: start the script or command that calls train() with torchrun
    #   torchrun --nproc_per_node 4 my_train.py    (train() reads RANK / WORLD_SIZE / LOCAL_RANK)
    # or train(cfg, world_size=2) spawns the local processes itself (gloo on CPU, nccl on CUDA).

The package, by what each module holds:

    config.py    TrainConfig, DataConfig: the resolved run configuration
    data.py      FrameDataModule: lhotse samplers, frame batches, SpecAugment, DataLoaders
    loop.py      train / run / train_one_epoch / validate / compute_loss: the loop itself
    session.py   Session: one rank's model, optimizer, data and counters
    state.py     resumable training state (optimizer, scheduler, RNG, position) and the done marker
    schedule.py  the learning-rate schedule;  logs.py  per-run log files

The experiment directory::

    exp_dir/config.json            resolved TrainConfig
    exp_dir/log/log-train-<date>   log of rank 0 (other ranks: ...-rank<r>)
    exp_dir/tensorboard/           train/valid curves
    exp_dir/last.pt                latest resumable state (every save_every_n steps and every epoch end)
    exp_dir/epoch-<n>.pt           resumable state after epoch n (epoch-<num_epochs>.pt: the final model)
    exp_dir/best-valid-acc.pt      model with the best validation frame accuracy
    exp_dir/skipped_training.txt   training cuts left out (non-finite features; cut id, reason), every epoch end
    exp_dir/skipped_validation.txt validation cuts left out, every validation (more than max_skipped_share fails)
    exp_dir/done                   JSON summary, written last: a re-run with the same config does nothing

An interrupted run (killed, or stopped by ``max_steps``) continues from ``last.pt``: same weights,
optimizer, scheduler, RNG states (every rank's) and position in the epoch's batch sequence, so on CPU the
result is bit-identical to an uninterrupted run (with DataLoader workers too: SpecAugment is seeded per
batch). On CUDA it is as close as CUDA's own run-to-run nondeterminism allows.
"""

from asr_kd.trainer.config import RUNTIME_FIELDS, DataConfig, TrainConfig
from asr_kd.trainer.loop import cross_entropy_loss, run, train

__all__ = ["RUNTIME_FIELDS", "DataConfig", "TrainConfig", "cross_entropy_loss", "run", "train"]
