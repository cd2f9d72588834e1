"""Deployment: ``asr-kd export`` (a checkpoint to ONNX, optional int8, verified on real cuts)."""

from __future__ import annotations

from pathlib import Path

from asr_kd.commands.common import add_common


def _add(sub) -> None:
    p = sub.add_parser(
        "export",
        help="deployment: a checkpoint to ONNX (dynamic batch and time axes, CMVN inside), optional int8",
        description="Exports the checkpoint's forward pass (raw fbank features (batch, frames, dim) and lengths "
        "(batch,) -> logits (batch, frames, num_pdfs)) to --output, with the model config and source hash in "
        "its metadata; with --int8 also <stem>.int8.onnx (onnxruntime quantization). Verifies every file "
        "against PyTorch on the first --num-cuts cuts of --cuts and writes <stem>.json (metadata and max "
        "|delta logit|). Fails when the fp32 file differs by more than --tolerance. asr-kd decode takes "
        "the .onnx files in place of checkpoints.",
    )
    p.add_argument("--model", type=Path, required=True, help="the checkpoint, e.g. exp/<recipe>/student-kd/best-valid-acc.pt")
    p.add_argument("--output", type=Path, required=True, help="the fp32 ONNX file, e.g. exp/<recipe>/deploy/student-kd.onnx")
    p.add_argument("--cuts", type=Path, required=True,
                   help="cuts with features to verify on and (static int8) to calibrate on: dev cuts, never test")
    p.add_argument("--num-cuts", type=int, default=16, help="cuts of --cuts used (the first readable ones)")
    p.add_argument("--batch-size", type=int, default=8, help="cuts per verification/calibration batch")
    p.add_argument("--int8", choices=("static", "dynamic"), default=None,
                   help="also write <stem>.int8.onnx: 'static' (int8 weights and activations, ranges calibrated on "
                   "--cuts) or 'dynamic' (int8 weights, activation ranges per batch); None: fp32 only")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest |delta logit| accepted for the fp32 file")
    add_common(p)


def _run(args) -> None:
    from asr_kd.models.export import export_model, report_path_for

    report = export_model(args.model, args.output, args.cuts, int8=args.int8, num_cuts=args.num_cuts,
                          batch_size=args.batch_size, tolerance=args.tolerance)  # fmt: skip
    check = report["verification"]
    line = f"{args.output}: max |delta logit| {check['max_abs_diff_fp32']:.3g} over {check['num_frames']} frames"
    if "max_abs_diff_int8" in check:
        line += (f"; {report['files']['int8']}: max |delta logit| {check['max_abs_diff_int8']:.3g}, same arg-max "
                 f"{100 * check['argmax_agreement_int8']:.2f}%")  # fmt: skip
    print(line + f"; report {report_path_for(args.output)}")


COMMANDS = {"export": (_add, _run)}
