"""Diagnosis of the aligner against the synthesizer's ground truth: what flat start costs, and the floors.

Usage:
    OMP_NUM_THREADS=1 python bench/bench_align_oracle.py --cuts-dir data/fbank --corpus synth_rm \\
        --lang-dir data/lang_synth_rm --work-dir exp/oracle --variant reference [--passes tri1 tri2]
    python bench/bench_align_oracle.py --cuts-dir data/fbank --corpus synth_rm --lang-dir data/lang_synth_rm \\
        --work-dir exp/oracle --floors-only
    python bench/bench_align_oracle.py --cuts-dir data/fbank --corpus synth_rm --lang-dir data/lang_synth_rm \\
        --work-dir exp/oracle --sequence-errors data/ali/synth_rm_cuts_test.jsonl.gz --tree exp/synth_rm/align/tree.json

Variants (``--variant``), each the GMM ladder of ``asr-kd align`` trained on train and scored on every
split with reference tiers (``<work-dir>/<variant>/align/report.json``, ``passes.json``):

- ``flat``: the default flat start;
- ``reference``: the monophone training starts from the reference phone tiers (each phone's frames
  split evenly over its HMM states: ``asr-kd align --init-from-reference``), then trains as usual,
  realignments included;
- ``reference-fixed``: the same start, and no realignment in training (every pass is estimated on the
  reference labels, converted to its tree): the models the ground truth itself gives.

The floors (``--floors-only``, also printed before every variant), on the scored splits:

- ``quantized``: the reference quantized to 10 ms frames, scored against itself (the scorer's floor);
- ``min_duration``: the reference boundaries moved as little as possible (sum of absolute frame
  shifts, by dynamic programming) so that every phone lasts at least its HMM's number of states, the
  shortest segment the aligner's topology allows: the best any alignment with this topology can score.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from lhotse import CutSet

from asr_kd.align.frames import segments, tier_to_frame_symbols
from asr_kd.align.report import AlignmentScorer
from asr_kd.data.lang import Lang

HEADLINE = (
    "frame_agreement",
    "boundary_within_10ms",
    "boundary_within_20ms",
    "boundary_within_40ms",
    "median_boundary_error_ms",
)


def min_duration_segmentation(lengths: np.ndarray, min_lengths: np.ndarray, num_frames: int) -> np.ndarray:
    """Segment lengths closest to ``lengths`` (sum of absolute boundary shifts) with each segment at least
    ``min_lengths`` frames long and ``num_frames`` in all; ``lengths`` unchanged when they already fit."""
    num = len(lengths)
    if min_lengths.sum() > num_frames:
        raise ValueError(f"{num} segments need {min_lengths.sum()} frames, the utterance has {num_frames}")
    ref_bounds = np.cumsum(lengths)[:-1]  # the end of every segment but the last
    frames = np.arange(num_frames + 1)
    cost = np.where(
        frames >= min_lengths[0], 0.0, np.inf
    )  # cost[t]: first segment ends at t (not yet scored)
    back = []
    for i in range(num - 1):
        cost = cost + np.abs(frames - ref_bounds[i])  # boundary i at frame t
        # the next boundary b needs b - t >= min_lengths[i + 1]: best predecessor among t <= b - min
        shifted = np.full(num_frames + 1, np.inf)
        arg = np.zeros(num_frames + 1, dtype=np.int64)
        m = int(min_lengths[i + 1])
        run_min = np.minimum.accumulate(cost)
        run_arg = np.array([0] * (num_frames + 1))
        best = 0
        for t in range(num_frames + 1):
            if cost[t] < cost[best]:
                best = t
            run_arg[t] = best
        shifted[m:] = run_min[: num_frames + 1 - m]
        arg[m:] = run_arg[: num_frames + 1 - m]
        back.append(arg)
        cost = shifted
    bounds = [num_frames]
    for arg in reversed(back):
        bounds.append(int(arg[bounds[-1]]))
    bounds = np.array([0, *reversed(bounds)])
    return np.diff(bounds)


def floors(cuts: CutSet, lang: Lang) -> dict[str, dict]:
    quantized, projected = AlignmentScorer(), AlignmentScorer()
    short = total = 0
    for cut in cuts:
        items = cut.supervisions[0].alignment["phone"]
        ref = tier_to_frame_symbols(items, cut.num_frames, 0.01, cut.start)
        quantized.add(ref, items, offset=cut.start)
        segs = segments(ref)
        lengths = np.array([n for _, _, n in segs])
        mins = np.array([lang.num_states(p) for p, _, _ in segs])
        short += int((lengths < mins).sum())
        total += len(segs)
        new = min_duration_segmentation(lengths, mins, cut.num_frames)
        projected.add([p for (p, _, _), n in zip(segs, new) for _ in range(n)], items, offset=cut.start)
    out = {"quantized": quantized.report(), "min_duration": projected.report()}
    out = {k: {h: v[h] for h in HEADLINE} for k, v in out.items()}
    out["segments_shorter_than_their_hmm"] = short / max(total, 1)
    return out


def sequence_errors(aligned_cuts: CutSet, lang: Lang, pdf_phone) -> dict:
    """Where the aligned phone sequence differs from the reference (Levenshtein over phone segments):
    the phone edit rate, the most common edits, the share of reference boundaries without a matching
    aligned phone, and boundaries within 20 ms next to a reference silence and elsewhere."""
    from collections import Counter

    from rapidfuzz.distance import Levenshtein

    from asr_kd.align.report import _merge_repeats

    phone_of_pdf = [lang.phone_symbols[p] for p in pdf_phone]
    sil = set(lang.silence_phones)
    edits: Counter = Counter()
    num_ref = num_edits = num_boundaries = num_matched = 0
    within = {"silence": [], "other": []}
    for cut in aligned_cuts:
        items = _merge_repeats(list(cut.supervisions[0].alignment["phone"]))
        hyp = segments([phone_of_pdf[p] for p in cut.load_frame_labels()])
        ref, hyp_symbols = [it.symbol for it in items], [h for h, _, _ in hyp]
        num_ref += len(ref)
        matched = {}
        for op in Levenshtein.opcodes(ref, hyp_symbols):
            if op.tag == "equal":
                matched.update(
                    {op.src_start + k: op.dest_start + k for k in range(op.src_end - op.src_start)}
                )
            else:
                num_edits += max(op.src_end - op.src_start, op.dest_end - op.dest_start)
                edits[
                    f"{op.tag} {' '.join(ref[op.src_start : op.src_end])} -> "
                    f"{' '.join(hyp_symbols[op.dest_start : op.dest_end])}"
                ] += 1
        for i in range(1, len(items)):
            num_boundaries += 1
            j = matched.get(i)
            if j is None or j == 0:
                continue
            num_matched += 1
            error_ms = 1000 * abs(hyp[j][1] * 0.01 - (items[i].start - cut.start))
            kind = "silence" if sil & {ref[i], ref[i - 1]} else "other"
            within[kind].append(error_ms <= 20 + 1e-6)
    return {
        "phone_edit_rate": num_edits / max(num_ref, 1),
        "boundaries_matched": num_matched / max(num_boundaries, 1),
        "matched_next_to_silence": len(within["silence"]),
        "matched_next_to_silence_within_20ms": float(np.mean(within["silence"]))
        if within["silence"]
        else None,
        "matched_other": len(within["other"]),
        "matched_other_within_20ms": float(np.mean(within["other"])) if within["other"] else None,
        "top_edits": edits.most_common(10),
    }


def reference_silences(cuts: CutSet) -> dict:
    """Reference silence segments: how many, their durations, and how many lie between words."""
    durations, between = [], 0
    for cut in cuts:
        phones = cut.supervisions[0].alignment["phone"]
        for k, it in enumerate(phones):
            if it.symbol == "SIL":
                durations.append(1000 * it.duration)
                between += 0 < k < len(phones) - 1
    d = np.array(durations)
    return {
        "count": len(d),
        "between_words": between,
        "median_ms": float(np.median(d)),
        "shorter_than_30ms": float(np.mean(d < 30)),
        "percentiles_10_25_50_75_90_ms": np.percentile(d, [10, 25, 50, 75, 90]).round(1).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts-dir", type=Path, required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--lang-dir", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--variant", choices=("flat", "reference", "reference-fixed"), default="reference")
    parser.add_argument("--passes", nargs="*", default=["tri1", "tri2"], choices=("tri1", "tri2"))
    parser.add_argument("--splits", nargs="+", default=["train", "test"])
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--floors-only", action="store_true")
    parser.add_argument(
        "--sequence-errors",
        type=Path,
        default=None,
        metavar="ALIGNED_CUTS",
        help="only analyse these aligned cuts (stage 3 output) against their reference tiers",
    )
    parser.add_argument(
        "--tree", type=Path, default=None, help="the tree.json of --sequence-errors' alignment"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    lang = Lang.load(args.lang_dir)
    if args.sequence_errors is not None:
        from asr_kd.hmm.tree import ContextDependency

        pdf_phone = ContextDependency.load(args.tree).pdf_phone if args.tree else lang.pdf_to_phone_id
        cuts = CutSet.from_file(args.sequence_errors)
        print(
            json.dumps(
                {
                    "sequence": sequence_errors(cuts, lang, pdf_phone),
                    "reference_silences": reference_silences(cuts),
                },
                indent=1,
            )
        )
        return
    result = {"floors": {}}
    for split in args.splits:
        if split == "train" and not args.floors_only:
            continue
        result["floors"][split] = floors(
            CutSet.from_file(args.cuts_dir / f"{args.corpus}_cuts_{split}.jsonl.gz"), lang
        )
    print(json.dumps(result["floors"], indent=1))
    if args.floors_only:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        (args.work_dir / "floors.json").write_text(json.dumps(result, indent=2) + "\n")
        return

    from asr_kd.align.stage import align_corpus
    from asr_kd.align.train_mono import MonoConfig
    from asr_kd.align.train_tri import TriConfig

    mono = MonoConfig(init="flat" if args.variant == "flat" else "reference")
    kinds = {"tri1": "deltas", "tri2": "lda_mllt"}
    passes = [(name, TriConfig(kind=kinds[name])) for name in args.passes]
    if args.variant == "reference-fixed":
        mono = replace(mono, realign_iters=())
        passes = [(name, replace(cfg, realign_iters=())) for name, cfg in passes]
    out = args.work_dir / args.variant
    start = time.perf_counter()
    report = align_corpus(
        args.cuts_dir,
        args.corpus,
        args.lang_dir,
        out / "ali",
        out / "align",
        splits=args.splits,
        num_jobs=args.nj,
        device="cpu",
        config=mono,
        passes=passes,
    )
    result["wall_s"] = time.perf_counter() - start
    result["passes"] = report.get("passes", {})
    (out / "oracle.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, splits in result["passes"].items():
        for split, r in splits.items():
            print(
                f"{args.variant:<16}{name:<6}{split:<6} frames {100 * r['frame_agreement']:.2f}%  <=20 ms "
                f"{100 * r['boundary_within_20ms']:.2f}%  median {r['median_boundary_error_ms']:.1f} ms"
            )


if __name__ == "__main__":
    main()
