"""How close forced alignments are to reference alignments (synthesizer ground truth, TIMIT .PHN).

Two measures, as in the forced-alignment literature:

* frame agreement: the share of frames whose aligned phone equals the reference phone at the frame's
  centre (:func:`asr_kd.align.frames.tier_to_frame_symbols`);
* boundary accuracy: reference and aligned phone sequences are matched by Levenshtein alignment
  (rapidfuzz); for every reference boundary (the start of each reference phone but the first) the
  matching aligned boundary is found and its distance measured; a reference boundary whose phone has
  no match counts as a miss. Reported: the share within 10, 20 and 40 ms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz.distance import Levenshtein

from asr_kd.align.frames import segments, tier_to_frame_symbols

TOLERANCES_MS = (10, 20, 40)


@dataclass
class AlignmentScorer:
    """Accumulates agreement statistics over utterances; :meth:`report` summarises them."""

    frame_shift: float = 0.01
    ref_map: Callable[[str], str] | None = None  # maps reference symbols into the aligner's phone set
    frames: int = 0
    agree: int = 0
    boundaries: int = 0
    within: Counter = field(default_factory=Counter)  # tolerance (ms) -> boundaries within it
    phone_frames: Counter = field(default_factory=Counter)
    phone_agree: Counter = field(default_factory=Counter)
    confusions: Counter = field(default_factory=Counter)  # (reference, aligned) -> frames
    boundary_errors_ms: list[float] = field(default_factory=list)
    num_cuts: int = 0

    def add(self, aligned: Sequence[str], reference_items: Sequence, offset: float = 0.0) -> None:
        """Score one utterance.

        Args:
            aligned: the aligned phone of every frame, ``(num_frames,)``.
            reference_items: the reference tier (lhotse ``AlignmentItem``s, seconds).
            offset: subtracted from reference times (the cut's start in its recording).
        """
        items = list(reference_items)
        if self.ref_map is not None:
            items = [type(it)(self.ref_map(it.symbol), it.start, it.duration, *it[3:]) for it in items]
        items = _merge_repeats(items)
        ref_frames = tier_to_frame_symbols(items, len(aligned), self.frame_shift, offset)
        self.num_cuts += 1
        for ref, hyp in zip(ref_frames, aligned):
            self.frames += 1
            self.phone_frames[ref] += 1
            if ref == hyp:
                self.agree += 1
                self.phone_agree[ref] += 1
            else:
                self.confusions[(ref, hyp)] += 1
        self._add_boundaries(aligned, items, offset)

    def _add_boundaries(self, aligned: Sequence[str], items: Sequence, offset: float) -> None:
        hyp = segments(aligned)
        ref_symbols = [it.symbol for it in items]
        hyp_symbols = [s for s, _, _ in hyp]
        matched: dict[int, int] = {}
        for op in Levenshtein.opcodes(ref_symbols, hyp_symbols):
            if op.tag == "equal":
                for k in range(op.src_end - op.src_start):
                    matched[op.src_start + k] = op.dest_start + k
        for i in range(1, len(items)):
            self.boundaries += 1
            j = matched.get(i)
            if j is None or j == 0:
                continue
            error_ms = 1000.0 * abs((items[i].start - offset) - hyp[j][1] * self.frame_shift)
            self.boundary_errors_ms.append(error_ms)
            for tol in TOLERANCES_MS:
                if error_ms <= tol + 1e-6:
                    self.within[tol] += 1

    def report(self, num_skipped: int = 0, worst: int = 10) -> dict:
        """The summary: ``frame_agreement``, ``boundary_within_{10,20,40}ms``, worst phones..."""
        per_phone = {
            p: {"frames": n, "agreement": self.phone_agree[p] / n} for p, n in self.phone_frames.items()
        }
        worst_phones = sorted(per_phone.items(), key=lambda kv: kv[1]["agreement"])[:worst]
        return {
            "num_cuts": self.num_cuts,
            "num_skipped": num_skipped,
            "num_frames": self.frames,
            "frame_agreement": self.agree / max(self.frames, 1),
            "num_boundaries": self.boundaries,
            **{f"boundary_within_{t}ms": self.within[t] / max(self.boundaries, 1) for t in TOLERANCES_MS},
            "median_boundary_error_ms": float(np.median(self.boundary_errors_ms)) if self.boundary_errors_ms else None,
            "worst_phones": [
                {"phone": p, **v, "most_confused_with": self._most_confused(p)} for p, v in worst_phones
            ],
        }

    def _most_confused(self, phone: str) -> str | None:
        pairs = [(n, hyp) for (ref, hyp), n in self.confusions.items() if ref == phone]
        return max(pairs)[1] if pairs else None


def _merge_repeats(items: Sequence) -> list:
    """Merge consecutive reference items with the same symbol (e.g. after mapping to a smaller set)."""
    out: list = []
    for it in items:
        if out and out[-1].symbol == it.symbol:
            prev = out[-1]
            out[-1] = type(prev)(prev.symbol, prev.start, it.start + it.duration - prev.start, *prev[3:])
        else:
            out.append(it)
    return out


def format_report(report: dict) -> str:
    """A readable table of :meth:`AlignmentScorer.report`."""
    lines = [
        f"cuts scored        {report['num_cuts']}  (skipped: {report['num_skipped']})",
        f"frames             {report['num_frames']}",
        f"frame agreement    {100 * report['frame_agreement']:.2f}%",
    ]
    for t in TOLERANCES_MS:
        lines.append(f"boundaries <= {t:2d} ms {100 * report[f'boundary_within_{t}ms']:.2f}%  "
                     f"(of {report['num_boundaries']})")
    if report.get("median_boundary_error_ms") is not None:
        lines.append(f"median boundary error {report['median_boundary_error_ms']:.1f} ms")
    lines.append("")
    lines.append(f"{'worst phones':<14}{'frames':>8}{'agree':>9}  most confused with")
    for w in report["worst_phones"]:
        lines.append(f"{w['phone']:<14}{w['frames']:>8}{100 * w['agreement']:>8.1f}%  {w['most_confused_with'] or '-'}")
    return "\n".join(lines)


def format_passes(passes: dict[str, dict[str, dict]]) -> str:
    """A table of the GMM ladder: frame agreement and boundaries within 20 ms per pass and split."""
    lines = [f"{'pass':<8}{'split':<8}{'frames agree':>14}{'<= 20 ms':>10}{'median ms':>11}"]
    for name, splits in passes.items():
        for split, r in splits.items():
            median = r.get("median_boundary_error_ms")
            lines.append(f"{name:<8}{split:<8}{100 * r['frame_agreement']:>13.2f}%{100 * r['boundary_within_20ms']:>9.2f}%"
                         f"{median if median is None else round(median, 1)!s:>11}")
    return "\n".join(lines)
