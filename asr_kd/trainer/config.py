"""The training configuration: the model, the data and the optimisation of one run (teacher or student).

The resolved ``TrainConfig`` is saved as ``<exp_dir>/config.json`` and inside every checkpoint
(``train_config``), so a run can be rebuilt, resumed and compared from its files alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from asr_kd.guard import DEFAULT_MAX_SKIPPED_SHARE
from asr_kd.models import ModelConfig


@dataclass
class DataConfig:
    """What the training loop reads and how it batches and augments it."""

    train_cuts: str  # training cuts with frame_labels (the align stage's output)
    valid_cuts: str  # validation cuts with frame_labels
    max_duration: float = 200.0  # seconds of audio per batch (per DDP rank)
    num_buckets: int = 10  # duration buckets of the training sampler (fewer for a small corpus: adapted_num_buckets)
    shuffle: bool = True  # shuffle the training cuts (reservoir shuffle, seeded by seed + epoch)
    drop_last: bool = False  # drop incomplete training batches
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    spec_augment: bool = True  # SpecAugment-style masking of training features (labels never change)
    num_freq_masks: int = 2  # frequency masks per utterance
    freq_mask_width: int = 10  # max width of a frequency mask, in mel bins
    num_time_masks: int = 2  # time masks per utterance
    time_mask_width: int = 20  # max width of a time mask, in frames
    time_mask_max_ratio: float = 0.2  # a time mask covers at most this share of an utterance's frames
    train_fraction: float = 1.0  # train on this share of the training cuts (the paper's 3% experiment)
    subset_seed: int = 0  # picks the train_fraction subset: the same cuts for every model and seed
    transfer_cuts: str | None = None  # unlabeled cuts trained on besides the (fraction of the) training cuts;
    # distillation only: their frames get the soft term alone (their frame labels, if any, are ignored)


@dataclass
class TrainConfig:
    """One training run; the layout of ``exp_dir`` is in :mod:`asr_kd.trainer`."""

    exp_dir: str  # experiment directory
    model: ModelConfig  # the model zoo's config (arch, size, num_pdfs, ...)
    data: DataConfig  # cuts, batch size, workers, SpecAugment
    num_epochs: int = 10  # passes over the training cuts
    lr: float = 1e-3  # peak learning rate of AdamW
    warmup_steps: int = 500  # linear warm-up from ~0 to lr, in optimizer steps
    lr_decay: str = "cosine"  # after warm-up: "cosine", "linear" or "constant"
    min_lr_ratio: float = 0.05  # final lr = lr * min_lr_ratio (cosine / linear decay)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 5.0  # max global gradient norm (0: no clipping)
    seed: int = 42  # model init, data order, SpecAugment, dropout
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda"; under DDP each rank takes cuda:LOCAL_RANK
    bf16: bool = True  # bf16 autocast of the forward pass on CUDA (ignored on CPU); loss in float32
    log_interval: int = 50  # optimizer steps between log lines / tensorboard points
    valid_interval: int = 0  # optimizer steps between extra mid-epoch validations (0: epoch ends only)
    save_every_n: int = 500  # optimizer steps between resumable checkpoints (0: epoch ends only)
    max_steps: int = 0  # stop resumably after this many optimizer steps in total (0: no limit)
    # fail when more than this share of the training (or validation) cuts is skipped (non-finite features),
    # checked at each epoch end (each validation) after writing skipped_<training|validation>.txt
    max_skipped_share: float = DEFAULT_MAX_SKIPPED_SHARE

    @classmethod
    def from_dict(cls, config: dict) -> "TrainConfig":
        """Inverse of ``dataclasses.asdict`` (config.json, a checkpoint's train_config); unknown keys are errors.

        Subclasses (``asr_kd.kd.distill.DistillConfig``) accept their own fields too.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
        values = dict(config)
        if isinstance(values.get("data"), dict):
            data_names = {f.name for f in fields(DataConfig)}
            bad = sorted(set(values["data"]) - data_names)
            if bad:
                raise ValueError(f"unknown data config field(s) {bad}; expected some of {sorted(data_names)}")
            values["data"] = DataConfig(**values["data"])
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)


# fields that may change between a run and its resumption without changing what it computes
RUNTIME_FIELDS = ("exp_dir", "device", "log_interval", "save_every_n", "max_steps", "valid_interval",
                  "data.num_workers", "max_skipped_share")  # fmt: skip
