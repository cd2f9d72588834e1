"""Knowledge distillation: ensemble combination, the distillation loss, the on-disk soft-target cache.

Usage:
    from asr_kd.kd import ensemble_posteriors, distillation_loss, sparse_distillation_loss
    soft_targets = ensemble_posteriors(teacher_logits, temperature=2.0)            # (K, B, T, P) -> (B, T, P)
    loss = distillation_loss(student_logits, soft_targets, frame_labels, 2.0, 0.5)

    from asr_kd.kd import load_soft_target_cuts, collate_soft_targets             # the cache (lhotse, h5py)

The loss and ensemble functions are pure tensor code; the cache names are imported on first use, so that
importing the maths does not load lhotse.
"""

from __future__ import annotations

from asr_kd.utils import lazy_exports

_EXPORTS = {
    "ensemble_posteriors": "ensemble", "validate_weights": "ensemble",
    "IGNORE_INDEX": "losses", "DistillationTerms": "losses", "distillation_loss": "losses",
    "distillation_terms": "losses", "sparse_distillation_loss": "losses",
    "densify_topk": "topk", "topk_posteriors": "topk",
    "CacheMismatchError": "cache_metadata", "bytes_per_frame": "cache_metadata",
    "cache_metadata": "cache_metadata", "prepare_cache_dir": "cache_metadata",
    "SoftTargetWriter": "cache", "collate_soft_targets": "cache", "load_soft_target_cuts": "cache",
    "merge_soft_target_shards": "cache", "soft_targets_of": "cache", "write_soft_target_shards": "cache",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
