"""Knowledge distillation: ensemble combination, the distillation loss, the soft-target cache, students.

Import each name from its module (one import path per name)::

    from asr_kd.kd.ensemble import ensemble_posteriors        # (K, B, T, P) teacher logits -> (B, T, P)
    from asr_kd.kd.losses import distillation_loss             # alpha T^2 KL(p_T || q_T) + (1 - alpha) CE(y, q_1)
    from asr_kd.kd.cache import build_cache, load_soft_target_cuts   # the on-disk soft-target cache (stage 5)
    from asr_kd.kd.distill import DistillConfig, distill       # a student on cached soft targets (stage 6)
    from asr_kd.kd.evaluate import frame_accuracies            # teachers, their mean and their ensemble

``ensemble`` and ``losses`` are pure tensor code; definitions in docs/design.md.
"""
