"""Word error rate with jiwer and icefall-style result files.

Usage:
    from asr_kd.decode.scoring import compute_wer, write_results
    stats = compute_wer({"utt1": ("the ref", "the hyp")})
    stats = write_results(exp_dir, "greedy", {"utt1": ("the ref", "the hyp")})   # + the three files

Files written (atomically) in ``exp_dir`` for a decoding ``name`` (icefall's layout):
    recogs-<name>.txt       per utterance id (sorted): ``<id>:\tref=[...]`` and ``<id>:\thyp=[...]``
    errs-<name>.txt         ``%WER`` line, per-utterance alignment (``ref->hyp`` for substitutions,
                            ``(word->*)`` deletions, ``(*->word)`` insertions) and the totals
    wer-summary-<name>.txt  ``settings\tWER`` and ``<name>\t<wer %>``
    utt-errors-<name>.tsv   per utterance id (sorted), tab-separated with a header line:
                            ``utt_id  ref_words  errors  sub  ins  del``; the paired WER tests of the
                            report (:mod:`asr_kd.decode.significance`) read it (``read_utt_errors``)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from asr_kd.utils import write_text


@dataclass
class WerStats:
    """Word error counts summed over utterances."""

    hits: int = 0
    sub: int = 0
    ins: int = 0
    dels: int = 0
    num_ref_words: int = 0
    num_utts: int = 0
    #: per utterance id: list of (ref word or None, hyp word or None) pairs of the alignment
    alignments: dict[str, list[tuple[str | None, str | None]]] = field(default_factory=dict, repr=False)
    #: per utterance id: {"ref_words", "sub", "ins", "del"}
    per_utt: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> int:
        return self.sub + self.ins + self.dels

    @property
    def wer(self) -> float:
        """Errors / reference words (0.0 without reference words; inf if then there are insertions)."""
        if self.num_ref_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.num_ref_words

    def summary(self) -> dict:
        """The totals as a plain dict (``wer`` as a fraction, ``del`` for deletions)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("alignments", "per_utt")}
        d["del"] = d.pop("dels")
        d.update(errors=self.errors, wer=self.wer)
        return d


def _align_one(ref: list[str], hyp: list[str]) -> tuple[list[tuple[str | None, str | None]], dict[str, int]]:
    """jiwer's alignment of one pair of word lists: (pairs, counts)."""
    import jiwer

    if not ref:  # jiwer rejects an empty reference
        return [(None, w) for w in hyp], {"hits": 0, "sub": 0, "ins": len(hyp), "dels": 0}
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) if hyp else "")
    pairs: list[tuple[str | None, str | None]] = []
    for chunk in out.alignments[0]:
        r, h = ref[chunk.ref_start_idx:chunk.ref_end_idx], hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type in ("equal", "substitute"):
            pairs += list(zip(r, h))
        elif chunk.type == "delete":
            pairs += [(w, None) for w in r]
        else:
            pairs += [(None, w) for w in h]
    return pairs, {"hits": out.hits, "sub": out.substitutions, "ins": out.insertions, "dels": out.deletions}


def compute_wer(results: Mapping[str, tuple[str, str]]) -> WerStats:
    """WER over utterances.

    Args:
        results: utterance id -> (reference text, hypothesis text), both already normalized; words are
            separated by whitespace.
    """
    stats = WerStats()
    for utt_id in sorted(results):
        ref, hyp = (text.split() for text in results[utt_id])
        pairs, counts = _align_one(ref, hyp)
        stats.alignments[utt_id] = pairs
        stats.per_utt[utt_id] = {"ref_words": len(ref), "sub": counts["sub"], "ins": counts["ins"],
                                 "del": counts["dels"]}  # fmt: skip
        stats.hits += counts["hits"]
        stats.sub += counts["sub"]
        stats.ins += counts["ins"]
        stats.dels += counts["dels"]
        stats.num_ref_words += len(ref)
        stats.num_utts += 1
    return stats


def _pair_text(ref: str | None, hyp: str | None) -> str:
    if ref == hyp:
        return ref or ""
    if ref is None:
        return f"(*->{hyp})"
    if hyp is None:
        return f"({ref}->*)"
    return f"({ref}->{hyp})"


def _wer_line(stats: WerStats) -> str:
    return (f"%WER {100 * stats.wer:.2f} [ {stats.errors} / {stats.num_ref_words}, {stats.ins} ins, "
            f"{stats.dels} del, {stats.sub} sub ]")


def write_results(exp_dir: Path | str, name: str, results: Mapping[str, tuple[str, str]]) -> WerStats:
    """Score ``results`` (see :func:`compute_wer`) and write recogs-/errs-/wer-summary-<name>.txt."""
    exp_dir = Path(exp_dir)
    stats = compute_wer(results)
    recogs = "".join(f"{u}:\tref={results[u][0].split()}\n{u}:\thyp={results[u][1].split()}\n"
                     for u in sorted(results))
    per_utt = "".join(f"{u}:\t{' '.join(_pair_text(r, h) for r, h in stats.alignments[u])}\n"
                      for u in sorted(results))
    errs = (f"{_wer_line(stats)}\n\nPER-UTT DETAILS: corr or (ref->hyp)\n{per_utt}\n"
            f"TOTALS: {stats.num_utts} utterances, {stats.num_ref_words} reference words, "
            f"{stats.hits} correct, {stats.sub} sub, {stats.ins} ins, {stats.dels} del\n")
    write_text(exp_dir / f"recogs-{name}.txt", recogs)
    write_text(exp_dir / f"errs-{name}.txt", errs)
    write_text(exp_dir / f"wer-summary-{name}.txt", f"settings\tWER\n{name}\t{100 * stats.wer:.2f}\n")
    write_text(exp_dir / f"utt-errors-{name}.tsv", utt_errors_text(stats))
    return stats


UTT_ERRORS_HEADER = ("utt_id", "ref_words", "errors", "sub", "ins", "del")


def utt_errors_text(stats: WerStats) -> str:
    """The ``utt-errors-<name>.tsv`` text of ``stats`` (module docstring)."""
    lines = ["\t".join(UTT_ERRORS_HEADER)]
    for u in sorted(stats.per_utt):
        c = stats.per_utt[u]
        lines.append(f"{u}\t{c['ref_words']}\t{c['sub'] + c['ins'] + c['del']}\t{c['sub']}\t{c['ins']}\t{c['del']}")
    return "\n".join(lines) + "\n"


def read_utt_errors(path: Path | str) -> dict[str, tuple[int, int]]:
    """``utt id -> (reference words, errors)`` of an ``utt-errors-<name>.tsv`` file.

    Raises ValueError naming the file and line when a line is not ``utt_id`` and five integers.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != UTT_ERRORS_HEADER:
        header = "\t".join(UTT_ERRORS_HEADER)
        raise ValueError(f"{path}: expected the header line {header!r}")
    out = {}
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        try:
            if len(parts) != len(UTT_ERRORS_HEADER):
                raise ValueError
            ref_words, errors, sub, ins, dels = (int(x) for x in parts[1:])
        except ValueError:
            raise ValueError(
                f"{path}:{i}: expected an utterance id and 5 integers separated by tabs, got {line!r}"
            ) from None
        if min(ref_words, errors, sub, ins, dels) < 0 or errors != sub + ins + dels:
            raise ValueError(f"{path}:{i}: counts must be >= 0 with errors = sub + ins + del, got {line!r}")
        out[parts[0]] = (ref_words, errors)
    return out
