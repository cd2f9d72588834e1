"""Stages 4-6: teacher training, the soft-target cache and frame-accuracy evaluation, distillation."""

from __future__ import annotations

from pathlib import Path

from asr_kd.commands.common import add_common
from asr_kd.guard import DEFAULT_MAX_SKIPPED_SHARE


# ------------------------------------------------------------------------------------------- train
def _add_training_args(p, default_size: str) -> None:
    """Flags shared by ``train`` and ``distill``: the model, the data and the optimisation."""
    p.add_argument("--exp-dir", type=Path, required=True, help="the run's directory, e.g. exp/<recipe>/teacher-0")
    p.add_argument("--arch", default="dnn", help="dnn, tdnn, blstm or conformer")
    p.add_argument("--size", default=default_size, help="student-small, student, teacher, teacher-large, ...-xl")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="gives the number of pdfs")
    p.add_argument("--tree", type=Path, default=None,
                   help="the alignment's tree.json (exp/<recipe>/align/tree.json): its pdf count, the targets' "
                   "(tied triphone states); default: the lang's monophone pdfs")
    p.add_argument("--train-cuts", type=Path, required=True, help="aligned training cuts (stage 3 output)")
    p.add_argument("--valid-cuts", type=Path, required=True, help="aligned validation cuts (stage 3 output)")
    p.add_argument("--num-epochs", type=int, default=10, help="passes over the training cuts")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW")
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warm-up steps, then cosine decay")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout probability in the hidden layers")
    p.add_argument("--no-spec-augment", action="store_true", help="train without SpecAugment masking")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (0: load in the training process)")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="train on this share of the training cuts, the same subset for every model "
                   "(the paper's 3%% experiment: 0.03)")
    p.add_argument("--save-every-n", type=int, default=500,
                   help="optimizer steps between mid-epoch resumable checkpoints (last.pt); 0: epoch ends only")
    p.add_argument("--seed", type=int, default=42, help="model init, data order, SpecAugment, dropout")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--max-skipped-share", type=float, default=DEFAULT_MAX_SKIPPED_SHARE,
                   help="fail when more than this share of the training cuts (checked at each epoch end) or of "
                   "the validation cuts (each validation) is skipped for non-finite features, after listing them "
                   "in <exp-dir>/skipped_training.txt (skipped_validation.txt)")  # fmt: skip
    add_common(p)


def _training_fields(args) -> dict:
    """The TrainConfig fields the shared flags set."""
    from asr_kd.data.lang import Lang
    from asr_kd.models import ModelConfig
    from asr_kd.trainer import DataConfig

    if args.tree is not None:
        from asr_kd.hmm.tree import ContextDependency

        num_pdfs = ContextDependency.load(args.tree).num_pdfs
    else:
        num_pdfs = Lang.load(args.lang_dir).num_pdfs
    model = ModelConfig(arch=args.arch, size=args.size, num_pdfs=num_pdfs, dropout=args.dropout)
    data = DataConfig(
        train_cuts=str(args.train_cuts), valid_cuts=str(args.valid_cuts), max_duration=args.max_duration,
        num_workers=args.num_workers, spec_augment=not args.no_spec_augment,
        train_fraction=args.train_fraction,
    )  # fmt: skip
    return dict(
        exp_dir=str(args.exp_dir), model=model, data=data, num_epochs=args.num_epochs, lr=args.lr,
        warmup_steps=args.warmup_steps, seed=args.seed, device=args.device, save_every_n=args.save_every_n,
        max_skipped_share=args.max_skipped_share,
    )  # fmt: skip


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="stage 4: train one frame-level acoustic model (a teacher) with cross-entropy",
        description="Stage 4. Cross-entropy on frame_labels (padding ignored), AdamW with warm-up and "
        "decay, SpecAugment, validation frame accuracy per epoch, best/last checkpoints, tensorboard. "
        "Resumes an interrupted run from the newest readable of <exp-dir>/last.pt and epoch-<n>.pt and does "
        "nothing when <exp-dir>/done exists; a second run on the same <exp-dir> is refused (lock). "
        "For several processes or GPUs start it with torchrun (DDP).",
    )
    _add_training_args(p, default_size="teacher")


def _run_train(args) -> None:
    from asr_kd.trainer import TrainConfig, train

    train(TrainConfig(**_training_fields(args)))


def _add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="stage 6: train a student on the cached soft targets (alpha 0: the hard-label baseline)",
        description="Stage 6. L = alpha T^2 KL(p_T || q_T) + (1 - alpha) CE(y, q_1) per frame, with the "
        "ensemble posteriors read from the soft-target cache (no teacher forward pass); refuses a cache "
        "whose metadata does not match. The shared trainer gives resumption, DDP, bf16 and logs.",
    )
    _add_training_args(p, default_size="student")
    p.add_argument("--cache-dir", type=Path, default=None, help="stage 5 output; not needed with --alpha 0")
    p.add_argument("--temperature", type=float, default=2.0, help="must be the cache's temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the soft term (0: hard labels only)")
    p.add_argument("--sparse", action="store_true", help="use top-k targets directly (large pdf sets)")
    p.add_argument("--teachers", type=Path, nargs="+", default=None, help="check the cache was made by these")
    p.add_argument("--transfer-cuts", type=Path, default=None,
                   help="unlabeled cuts (a transfer set) trained on besides --train-cuts: soft term only on their "
                   "frames; their soft targets are the cache's 'transfer' split (asr-kd cache --split transfer)")  # fmt: skip


def _run_distill(args) -> None:
    from dataclasses import replace

    from asr_kd.kd.distill import DistillConfig, distill

    fields = _training_fields(args)
    if args.transfer_cuts is not None:
        fields["data"] = replace(fields["data"], transfer_cuts=str(args.transfer_cuts))
    distill(DistillConfig(
        **fields, cache_dir=str(args.cache_dir) if args.cache_dir else None,
        temperature=args.temperature, alpha=args.alpha, sparse=args.sparse,
        teachers=[str(t) for t in args.teachers] if args.teachers else None,
    ))  # fmt: skip


# ------------------------------------------------------------------------------------------- cache
def _add_cache(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="stage 5: cache the teacher ensemble's temperature-softened posteriors on the cuts",
        description="Stage 5. Runs the teachers over the cuts (no augmentation), combines their "
        "posteriors at temperature T (arithmetic or geometric mean, optional weights) and stores them "
        "per frame, top-k sparse or dense fp16, as lhotse custom fields; writes "
        "<cache-dir>/cuts_soft_<split>.jsonl.gz and metadata.json, keyed by cut id. Any CutSet with "
        "features works, with or without frame_labels (an unlabeled transfer set: --split transfer). "
        "Resumable and sharded by rank.",
    )
    p.add_argument("--teachers", type=Path, nargs="+", required=True, help="teacher checkpoints")
    p.add_argument("--cuts", type=Path, required=True,
                   help="any cuts with features: the aligned training cuts, or unlabeled transfer cuts")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, required=True, help="the cache's directory (metadata.json, shards)")
    p.add_argument("--split", default="train", help="name of the cached split")
    p.add_argument("--temperature", type=float, default=2.0, help="T of the teachers' softmax(z / T)")
    p.add_argument("--combination", choices=("arithmetic", "geometric"), default="arithmetic",
                   help="mean of the teachers' posteriors, or normalized mean of their log-posteriors")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one per teacher; default uniform")
    p.add_argument("--storage", choices=("topk", "dense"), default="topk",
                   help="top-k pdfs per frame (fp16 probabilities + ids), or all pdfs in fp16")
    p.add_argument("--k", type=int, default=16, help="pdfs kept per frame with --storage topk")
    p.add_argument("--num-shards", type=int, default=8, help="HDF5 shards of the split (the unit of resumption)")
    p.add_argument("--rank", type=int, default=0, help="this process's rank when several produce shards")
    p.add_argument("--world-size", type=int, default=1, help="processes producing shards (each runs --rank r)")
    p.add_argument("--batch-size", type=int, default=16, help="cuts per forward pass")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--max-skipped-share", type=float, default=DEFAULT_MAX_SKIPPED_SHARE,
                   help="fail when more than this share of the cuts is left out (non-finite features)")
    add_common(p)


def _run_cache(args) -> None:
    from asr_kd.kd.cache import build_cache

    build_cache(
        args.teachers, args.cuts, args.cache_dir, split=args.split, temperature=args.temperature,
        combination=args.combination, weights=args.weights, storage=args.storage, k=args.k,
        num_shards=args.num_shards, rank=args.rank, world_size=args.world_size,
        batch_size=args.batch_size, device=args.device, max_skipped_share=args.max_skipped_share,
    )  # fmt: skip


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="stages 5-6: frame accuracy of models, of their mean and of their ensemble on aligned cuts",
        description="Frame accuracy (arg-max posterior == frame label over non-padding frames) of every "
        "model, the mean over models, and the ensemble (arithmetic mean of posteriors, T=1).",
    )
    p.add_argument("--models", type=Path, nargs="+", required=True, help="checkpoints")
    p.add_argument("--cuts", type=Path, nargs="+", required=True, help="cuts with frame_labels")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    add_common(p)


def _run_evaluate(args) -> None:
    from asr_kd.kd.evaluate import frame_accuracies
    from asr_kd.utils import write_json

    results = [frame_accuracies(args.models, c, device=args.device) for c in args.cuts]
    if args.json:
        write_json(args.json, results)
    for r in results:
        skipped = f", {r['num_skipped']} cuts skipped (non-finite features)" if r["num_skipped"] else ""
        print(f"{r['cuts']}: {r['num_frames']} frames{skipped}")
        for name, acc in r["models"].items():
            print(f"  {100 * acc:6.2f}%  {name}")
        print(f"  {100 * r['mean_model']:6.2f}%  mean of the models")
        if r["ensemble"] is not None:
            print(f"  {100 * r['ensemble']:6.2f}%  ensemble")


COMMANDS = {
    "train": (_add_train, _run_train),
    "distill": (_add_distill, _run_distill),
    "cache": (_add_cache, _run_cache),
    "evaluate": (_add_evaluate, _run_evaluate),
}
