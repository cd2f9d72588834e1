"""The export stage (``asr-kd export``): a checkpoint to ONNX, verified against PyTorch on real cuts.

Usage::

    asr-kd export --model exp/x/student-kd/best-valid-acc.pt --output exp/x/deploy/student-kd.onnx \\
        --cuts data/ali/x_cuts_dev.jsonl.gz --int8 static

    from asr_kd.models.export import export_model
    report = export_model("exp/x/student-kd/best-valid-acc.pt", "exp/x/deploy/student-kd.onnx",
                          "data/ali/x_cuts_dev.jsonl.gz", int8="static")

Writes ``<output>`` (fp32), with ``int8`` also ``<output stem>.int8.onnx``, and last ``<output stem>.json``:
the file's metadata (:func:`asr_kd.models.onnx.read_metadata`) and the verification: over the first
``num_cuts`` readable cuts of ``cuts``, the largest ``|logit_torch - logit_onnx|`` of the fp32 file (the
export fails when it exceeds ``tolerance``) and of the int8 file, and the share of frames whose int8
arg-max equals torch's. Static int8 calibrates its activation ranges on those same cuts, so pass
development cuts, never the test set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet

from asr_kd.batch import collate_frames
from asr_kd.models.checkpoint import load_model
from asr_kd.models.onnx import compare_logits, export_onnx, open_onnx, quantize_int8, reference_logits
from asr_kd.utils import write_json

DEFAULT_TOLERANCE = 1e-3  # largest |delta logit| accepted between the fp32 ONNX file and PyTorch


def int8_path_for(onnx_path: Path | str) -> Path:
    """``student.onnx`` -> ``student.int8.onnx``."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.int8.onnx")


def report_path_for(onnx_path: Path | str) -> Path:
    """``student.onnx`` -> ``student.json`` (the export's metadata and verification)."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.json")


def load_batches(cuts_path: Path | str, num_cuts: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(features, lengths)`` batches of the first ``num_cuts`` readable cuts of ``cuts_path`` (the unreadable
    ones are skipped and logged)."""
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    taken = skipped = 0
    group: list = []

    def flush() -> None:
        nonlocal taken, skipped
        batch, bad = collate_frames(group, labels="none", skip_unreadable=True)
        for cut_id, reason in bad.items():
            logging.warning(f"{cut_id}: skipped for the export's verification ({reason})")
        skipped += len(bad)
        if batch is not None:
            batches.append((batch["features"], batch["lengths"]))
            taken += len(batch["cut_ids"])
        group.clear()

    for cut in CutSet.from_file(cuts_path):
        group.append(cut)
        if len(group) == min(batch_size, num_cuts - taken):
            flush()
            if taken >= num_cuts:
                break
    if group:
        flush()
    if not batches:
        raise ValueError(f"no readable cut in {cuts_path} to verify the export on")
    if skipped:
        logging.warning(f"{skipped} unreadable cuts of {cuts_path} skipped for the verification")
    return batches


def export_model(checkpoint: Path | str, output: Path | str, cuts: Path | str, *, int8: str | None = None,
                 num_cuts: int = 16, batch_size: int = 8, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:  # fmt: skip
    """Export, optionally quantize, verify on real cuts; write the report (module docstring) and return it.

    Raises ValueError when the fp32 file differs from PyTorch by more than ``tolerance`` (the report is then
    not written).
    """
    output = Path(output)
    report_path_for(output).unlink(missing_ok=True)  # the report vouches for the file: never beside a new one
    meta = export_onnx(checkpoint, output)
    batches = load_batches(cuts, num_cuts, batch_size)
    reference, _ = load_model(checkpoint)
    expected = reference_logits(reference, batches)  # PyTorch's logits: once, for the fp32 and int8 checks
    fp32 = compare_logits(expected, open_onnx(output, threads=0), batches)
    fp32_diff, frames = fp32.max_abs_diff, fp32.frames
    logging.info(f"{output}: max |delta logit| vs PyTorch {fp32_diff:.3g} over {frames} frames of {cuts}")
    if not fp32_diff <= tolerance:
        output.unlink(missing_ok=True)  # a wrong model must not stay where decode would take it
        raise ValueError(f"{output} differs from {checkpoint} by up to {fp32_diff:.3g} in the logits (tolerance "
                         f"{tolerance:g}): the export is wrong")  # fmt: skip
    verification: dict[str, Any] = {"cuts": str(cuts), "num_cuts": sum(int(b[1].numel()) for b in batches),
                                    "num_frames": frames, "tolerance": tolerance,
                                    "max_abs_diff_fp32": fp32_diff}  # fmt: skip
    files = {"fp32": str(output)}
    if int8 is not None:
        target = int8_path_for(output)
        quantize_int8(output, target, mode=int8, calibration=batches if int8 == "static" else None)
        int8_check = compare_logits(expected, open_onnx(target, threads=0), batches)  # diff and arg-max
        int8_diff, agreement = int8_check.max_abs_diff, int8_check.argmax_agreement
        verification.update(max_abs_diff_int8=int8_diff, argmax_agreement_int8=agreement, int8_mode=int8)
        files["int8"] = str(target)
        logging.info(f"{target}: max |delta logit| vs PyTorch {int8_diff:.3g}, same arg-max on "
                     f"{100 * agreement:.2f}% of the frames")  # fmt: skip
    report = {**meta, "model_config": meta["model_config"].to_dict(), "files": files, "verification": verification}
    write_json(report_path_for(output), report)
    return report
