"""Deployment benchmark: what compression buys. Parameters, file size, peak RSS, forward real-time factor on
one CPU thread and WER of the teacher ensemble, one teacher and the student (PyTorch fp32, ONNX fp32,
ONNX int8), plus the student's chunked (streaming) decoding.

Usage (after the recipe's stage 7; paths of the default synth_digits recipe)::

    python bench/bench_deploy.py --exp exp/synth_digits --out-dir exp/synth_digits/deploy \\
        --test-cuts data/ali/synth_digits_cuts_test.jsonl.gz --dev-cuts data/ali/synth_digits_cuts_dev.jsonl.gz \\
        --train-cuts data/ali/synth_digits_cuts_train.jsonl.gz --lang-dir data/lang --chunk-frames 8 32

What it does:

1. ``asr-kd export`` of every teacher and of the student (``<exp>/teacher-<i>/``, ``<exp>/<student>/``
   ``best-valid-acc.pt``) to ``<out-dir>/*.onnx``; the student also in int8 (static quantization, calibrated on
   ``--calib-cuts`` dev cuts), each verified against PyTorch (max |delta logit| printed and in the table).
2. Per row, in a fresh subprocess with ``torch.set_num_threads(1)`` and one onnxruntime intra-op thread: load
   the test cuts' features into memory, open the model(s), run the forward pass over every test cut in
   batches of ``--batch-size`` cuts, ``--repeats`` times; forward RTF = best forward time / audio duration;
   peak RSS = the subprocess's ``VmHWM`` (so it includes the interpreter, torch, onnxruntime, lhotse and
   the features: the ``no model`` row measures that floor); model RSS = peak RSS minus the peak before the
   model was opened (weights, runtime and activations of the forward passes).
3. WER with ``asr-kd decode``'s library path (``decode_cuts``: the acoustic scale tuned on the dev cuts,
   the recipe's LM and HCLG, kaldi-decoder, jiwer), records under ``<out-dir>/decode``; for the student also
   chunked decoding at each ``--chunk-frames`` (utterance and running CMVN), with its algorithmic latency.

Prints the tables (markdown) with the ratios student vs ensemble and int8 vs fp32, and writes them with
every figure to ``<out-dir>/bench_deploy.json``. ``--lang-dir`` is written to (the HCLG cache): pass a copy
when the recipe's directory must stay untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from asr_kd.utils import setup_logging, write_json


def peak_rss_kb() -> int:
    """This process's peak resident set size in kB (``VmHWM``: unlike ``ru_maxrss``, it starts afresh at
    ``exec``, so a subprocess does not inherit its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: kB on Linux, bytes on macOS


def forward_worker(spec: dict) -> dict:
    """Runs in the subprocess: time the forward passes of one row (module docstring, step 2)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import onnxruntime  # noqa: F401 - imported by every row, so that the RSS floor is the same
    import torch
    from lhotse import CutSet

    from asr_kd.batch import collate_frames
    from asr_kd.models.onnx import num_parameters, open_model_file

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cuts = list(CutSet.from_file(spec["cuts"]))
    batches = []
    for b in range(0, len(cuts), spec["batch_size"]):
        batch, _ = collate_frames(cuts[b : b + spec["batch_size"]], labels="none", skip_unreadable=True)
        if batch is not None:
            batches.append((batch["features"], batch["lengths"]))
    audio = sum(float(c.duration) for c in cuts)
    rss_data = peak_rss_kb()
    models = [open_model_file(p, "cpu", threads=1) for p in spec["models"]]
    times = []
    with torch.no_grad():
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for features, lengths in batches:
                for model in models:
                    model(features, lengths)
            times.append(time.perf_counter() - start)
    return {"forward_seconds": min(times) if times else 0.0, "audio_seconds": audio,
            "rtf": (min(times) / audio) if times else 0.0, "params": sum(num_parameters(m) for m in models),
            "peak_rss_mb": peak_rss_kb() / 1024.0, "rss_before_models_mb": rss_data / 1024.0,
            "model_rss_mb": (peak_rss_kb() - rss_data) / 1024.0,
            "all_times": times}  # fmt: skip


def run_forward(models: list[str], args) -> dict:
    """The forward measurement of ``models`` in a fresh Python process."""
    spec = {"models": models, "cuts": str(args.test_cuts), "batch_size": args.batch_size, "repeats": args.repeats}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         env=env, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"forward worker failed for {models}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_all(args) -> dict[str, dict]:
    """ONNX files of the teachers and the student (module docstring, step 1): ``{name: export report}``."""
    from asr_kd.models.export import export_model, report_path_for
    from asr_kd.utils import file_sha256

    def export(ckpt: Path, name: str, int8: str | None) -> dict:
        """The export report, reused when a finished export of the same checkpoint exists (so that a rerun
        reuses the decode records of the same files)."""
        out = args.out_dir / f"{name}.onnx"
        if report_path_for(out).is_file():
            old = json.loads(report_path_for(out).read_text())
            if old["source_sha256"] == file_sha256(ckpt) and old["verification"].get("int8_mode") == int8:
                return old
        return export_model(ckpt, out, args.calib_cuts, int8=int8, num_cuts=args.calib_num_cuts)

    reports = {f"teacher-{i}": export(ckpt, f"teacher-{i}", None) for i, ckpt in enumerate(args.teachers)}
    reports[args.student_name] = export(args.student, args.student_name, args.int8)
    return reports


def decode(models: list[str], name: str, args, **kwargs) -> dict:
    from asr_kd.decode.run import decode_cuts

    return decode_cuts(models, args.test_cuts, args.lang_dir, args.out_dir / "decode", name, pdf_counts=args.pdf_counts,
                       lm_cuts=args.train_cuts, lm_order=args.lm_order, tune_cuts=args.dev_cuts, device="cpu",
                       num_jobs=args.nj, threads=1, **kwargs)  # fmt: skip


def file_mb(paths: list[str]) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 1e6


def markdown(rows: list[dict], ratios: list[str], streaming: list[dict]) -> str:
    lines = [("| model | runtime | params | file size | peak RSS (model) | forward RTF (1 thread) | WER % (S/I/D) | "
             "max abs Δlogit vs torch |"), "|---|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in rows:
        wer = f"{100 * r['wer']:.2f} ({r['sub']}/{r['ins']}/{r['del']})" if r.get("wer") is not None else ""
        delta = f"{r['delta']:.2g}" if r.get("delta") is not None else ""
        size = f"{r['file_mb']:.2f} MB" if r.get("file_mb") else ""
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else ""
        lines.append(f"| {r['name']} | {r['runtime']} | {params} | {size} | {r['peak_rss_mb']:.0f} MB "
                     f"({r['model_rss_mb']:.0f} MB) | "
                     f"{r['rtf']:.4f} | {wer} | {delta} |")  # fmt: skip
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in ratios)
    if streaming:
        text += "\n\n| student decoding | CMVN | algorithmic latency | WER % (S/I/D) |\n|---|---|---:|---|\n"
        text += "\n".join(f"| {s['label']} | {s['cmvn']} | {s['latency']} | {100 * s['wer']:.2f} "
                          f"({s['sub']}/{s['ins']}/{s['del']}) |" for s in streaming)  # fmt: skip
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--exp", type=Path, default=Path("exp/synth_digits"),
                        help="the recipe's exp dir: teacher-<i>/, <student>/, align/pdf_counts.txt (read only)")
    parser.add_argument("--out-dir", type=Path, default=Path("exp/synth_digits/deploy"),
                        help="ONNX files, decode records, bench_deploy.json")
    parser.add_argument("--num-teachers", type=int, default=3, help="teacher-0 .. teacher-<n-1> form the ensemble")
    parser.add_argument("--student-name", default="student-kd", help="the student's directory under --exp")
    parser.add_argument("--test-cuts", type=Path, default=Path("data/ali/synth_digits_cuts_test.jsonl.gz"),
                        help="forward timing and WER")
    parser.add_argument("--dev-cuts", type=Path, default=Path("data/ali/synth_digits_cuts_dev.jsonl.gz"),
                        help="acoustic-scale tuning")
    parser.add_argument("--calib-cuts", type=Path, default=None,
                        help="export verification and int8 calibration (None: --dev-cuts)")
    parser.add_argument("--calib-num-cuts", type=int, default=32, help="cuts of --calib-cuts used")
    parser.add_argument("--train-cuts", type=Path, default=Path("data/ali/synth_digits_cuts_train.jsonl.gz"),
                        help="LM transcripts")
    parser.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="written to: HCLG cache")
    parser.add_argument("--lm-order", type=int, default=3, help="n-gram order of the LM (the recipe's)")
    parser.add_argument("--int8", choices=("static", "dynamic"), default="static", help="student quantization")
    parser.add_argument("--batch-size", type=int, default=8, help="cuts per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="forward passes over the test set (best is kept)")
    parser.add_argument("--chunk-frames", type=int, nargs="*", default=[], help="chunked student decodings")
    parser.add_argument("--nj", type=int, default=1, help="decoding processes")
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(forward_worker(json.loads(args.worker))))
        return
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    args.calib_cuts = args.calib_cuts or args.dev_cuts
    args.teachers = [args.exp / f"teacher-{i}" / "best-valid-acc.pt" for i in range(args.num_teachers)]
    args.student = args.exp / args.student_name / "best-valid-acc.pt"
    args.pdf_counts = args.exp / "align" / "pdf_counts.txt"
    reports = export_all(args)
    onnx_teachers = [reports[f"teacher-{i}"]["files"]["fp32"] for i in range(args.num_teachers)]
    student = reports[args.student_name]["files"]
    s = args.student_name
    specs = [  # name, runtime, files, export-verification delta
        ("no model (floor)", "-", [], None),
        (f"ensemble of {args.num_teachers} teachers", "torch fp32", [str(p) for p in args.teachers], None),
        (f"ensemble of {args.num_teachers} teachers", "onnxruntime fp32", onnx_teachers,
         max(reports[f"teacher-{i}"]["verification"]["max_abs_diff_fp32"] for i in range(args.num_teachers))),
        ("teacher-0", "torch fp32", [str(args.teachers[0])], None),
        ("teacher-0", "onnxruntime fp32", onnx_teachers[:1], reports["teacher-0"]["verification"]["max_abs_diff_fp32"]),
        (s, "torch fp32", [str(args.student)], None),
        (s, "onnxruntime fp32", [student["fp32"]], reports[s]["verification"]["max_abs_diff_fp32"]),
        (s, f"onnxruntime int8 ({args.int8})", [student["int8"]], reports[s]["verification"]["max_abs_diff_int8"]),
    ]  # fmt: skip
    rows = []
    for name, runtime, files, delta in specs:
        forward = run_forward(files, args)
        row = {"name": name, "runtime": runtime, "files": files, "delta": delta, **forward,
               "file_mb": file_mb(files) if files else None}  # fmt: skip
        if files:
            tag = f"{name.split()[0]}-{runtime.split()[0]}-{runtime.split()[1]}".replace("(", "").replace(")", "")
            record = decode(files, f"bench-{tag}" if len(files) == 1 else f"bench-ensemble-{runtime.split()[0]}", args)
            row.update({k: record[k] for k in ("wer", "sub", "ins", "del", "frame_acc", "num_words")})
            row["acoustic_scale"] = record["decode_config"]["tuning"]["best"]
        rows.append(row)
        print(f"{name} [{runtime}]: RTF {row['rtf']:.4f}, peak RSS {row['peak_rss_mb']:.0f} MB "
              f"(model {row['model_rss_mb']:.0f} MB)"
              + (f", WER {100 * row['wer']:.2f}%" if files else ""), flush=True)  # fmt: skip
    by = {(r["name"], r["runtime"]): r for r in rows}
    ens_t, ens_o = by[(specs[1][0], "torch fp32")], by[(specs[1][0], "onnxruntime fp32")]
    st_t, st_o, st_q = by[(s, "torch fp32")], by[(s, "onnxruntime fp32")], by[(s, specs[-1][1])]
    ratios = [
        (f"int8 student vs torch ensemble: {ens_t['rtf'] / st_q['rtf']:.1f}x faster forward, "
        f"{ens_t['params'] / st_q['params']:.1f}x fewer parameters, {ens_t['file_mb'] / st_q['file_mb']:.1f}x "
        f"smaller files, {ens_t['model_rss_mb'] / max(st_q['model_rss_mb'], 1e-9):.1f}x less model RSS; "
        f"WER {100 * st_q['wer']:.2f} vs {100 * ens_t['wer']:.2f}"),
        f"int8 student vs onnxruntime fp32 ensemble: {ens_o['rtf'] / st_q['rtf']:.1f}x faster forward",
        f"fp32 student (torch) vs torch ensemble: {ens_t['rtf'] / st_t['rtf']:.1f}x faster forward",
        (f"int8 vs fp32 student (onnxruntime): {st_o['rtf'] / st_q['rtf']:.2f}x faster forward, "
        f"{st_o['file_mb'] / st_q['file_mb']:.1f}x smaller file, WER {100 * (st_q['wer'] - st_o['wer']):+.2f} "
        f"points ({100 * st_q['wer']:.2f} vs {100 * st_o['wer']:.2f})"),
        (f"fp32 ONNX vs torch student: WER {100 * st_o['wer']:.2f} vs {100 * st_t['wer']:.2f} "
        f"({round((st_o['wer'] - st_t['wer']) * st_t['num_words'])} words of {st_t['num_words']})"),
    ]  # fmt: skip
    streaming = []
    for chunk in args.chunk_frames:
        for cmvn in ("utterance", "running"):
            record = decode([str(args.student)], f"bench-{s}-chunk{chunk}-{cmvn}", args, chunk_frames=chunk, cmvn=cmvn)
            info = record["decode_config"]["streaming"]
            streaming.append({"label": f"chunks of {chunk} frames (+{info['right_context']} look-ahead)", "cmvn": cmvn,
                              "latency": f"{info['latency_ms']:g} ms",
                              **{k: record[k] for k in ("wer", "sub", "ins", "del")}})  # fmt: skip
    table = markdown(rows, ratios, streaming)
    print(table)
    write_json(args.out_dir / "bench_deploy.json", {"rows": rows, "ratios": ratios, "streaming": streaming,
                                                   "markdown": table, "machine": platform.platform(),
                                                   "cpu_count": os.cpu_count()})  # fmt: skip


if __name__ == "__main__":
    main()
