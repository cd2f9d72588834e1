"""Helpers of ``asr_kd.train``: resumable checkpoints, the LR schedule, per-run log files."""
