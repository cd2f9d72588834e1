"""Forced alignment: training graphs (kaldifst), flat start (EqualAlign) and Viterbi search (kaldi-decoder).

Usage:
    from asr_kd.align import utterance_graph, equal_alignment, viterbi_align, align_batch
    graph = utterance_graph(lang, words)                      # AlignmentError: a word without pronunciation
    frame_labels = equal_alignment(graph, num_frames, seed)   # (T,) int32 pdf ids, or None: too short
    ali = viterbi_align(graph, loglikes)                      # Alignment, or None: failed

The names are imported on first use, so that importing a submodule (``asr_kd.align.frames``) does not
load kaldifst / kaldi-decoder (the import order of the kaldi* modules matters to some processes).
"""

from __future__ import annotations

from asr_kd.utils import lazy_exports

_EXPORTS = {
    "AlignmentError": "graph", "equal_alignment": "graph", "min_num_frames": "graph",
    "pronunciations": "graph", "utterance_graph": "graph",
    "Alignment": "viterbi", "align_batch": "viterbi", "viterbi_align": "viterbi",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
