"""Benchmark of the decoding search: WER, utterances without a final state, and speed, for weight-pushed or
plain HCLG, a fixed or a scale-following beam, and kaldi-decoder's FasterDecoder or LatticeSimpleDecoder.

Usage:
    python bench/bench_decode_search.py --gmm exp/synth_digits/align/final.gmm.pt \\
        --models exp/synth_digits/teacher-0/best-valid-acc.pt --pdf-counts exp/synth_digits/align/pdf_counts.txt \\
        --cuts data/ali/synth_digits_cuts_test.jsonl.gz --lm-cuts data/ali/synth_digits_cuts_train.jsonl.gz \\
        --lang-dir data/lang --scales 0.1 0.3 1.0 --out exp/synth_digits/bench/decode_search.json

Each acoustic model's log-likelihoods of the cuts are computed once (GMM: its own; checkpoints: hybrid
scores with the priors of --pdf-counts); then every combination of graph (plain, pushed:
asr_kd.decode.push), beam (fixed: --beam at every scale; scaled: --beam * max(1, scale / 0.1)) and acoustic scale is searched
with the FasterDecoder, and the fixed beam at --lattice-scales with the LatticeSimpleDecoder, with --max-retries (default 0: the raw count of
utterances that end without a final state). Prints one line per run and writes them all as JSON.
Search seconds are of one process (the real-time factor is search seconds / audio seconds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import kaldifst
import torch
from lhotse import CutSet

from asr_kd.data.lang import Lang
from asr_kd.decode.decoder import search_batch
from asr_kd.decode.graph import ensure_decoding_graph, graph_label_pdfs
from asr_kd.decode.push import push_weights
from asr_kd.decode.run import (
    _Scorer,
    compute_log_priors,
    read_pdf_counts,
    reference_text,
)
from asr_kd.decode.scoring import compute_wer
from asr_kd.utils import write_json


def loglikes_of(scorer: _Scorer, cuts: list, batch_size: int = 32) -> list[tuple[str, str, object]]:
    for b in range(0, len(cuts), batch_size):
        scorer.forward(cuts[b : b + batch_size])
    return scorer.take_pending()


def acoustic_models(args, graph_path: Path, lang: Lang) -> dict[str, list]:
    """name -> pending (cut id, reference, log-likelihoods) of every --gmm and --models file."""
    from asr_kd.decode.gmm_decode import gmm_acoustic, load_gmm_system
    from asr_kd.models.checkpoint import load_checkpoint, model_from_checkpoint

    cuts = list(CutSet.from_file(args.cuts))
    out = {}
    for path in args.gmm:
        scorer = _Scorer([], torch.device("cpu"), None, graph_path, lang.word_symbols, {}, 1, False,
                         acoustic=gmm_acoustic(load_gmm_system(path)))  # fmt: skip
        out[f"gmm:{Path(path).parent.name}"] = loglikes_of(scorer, cuts)
    if args.models:
        priors = compute_log_priors(read_pdf_counts(args.pdf_counts))
        for path in args.models:
            model = model_from_checkpoint(load_checkpoint(path), torch.device("cpu"))
            scorer = _Scorer([model], torch.device("cpu"), priors, graph_path, lang.word_symbols, {}, 1, False)
            out[f"nnet:{Path(path).parent.name}"] = loglikes_of(scorer, cuts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gmm", type=Path, nargs="*", default=[], help="GMM systems (final.gmm.pt)")
    parser.add_argument("--models", type=Path, nargs="*", default=[], help="neural checkpoints")
    parser.add_argument("--pdf-counts", type=Path, default=None, help="priors of the neural models")
    parser.add_argument("--cuts", type=Path, required=True, help="the cuts decoded")
    parser.add_argument("--lm-cuts", type=Path, required=True, help="training cuts: the LM text")
    parser.add_argument("--lm-order", type=int, default=3)
    parser.add_argument("--lang-dir", type=Path, default=Path("data/lang"))
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--beam", type=float, default=13.0)
    parser.add_argument("--max-retries", type=int, default=0)
    parser.add_argument("--lattice-scales", type=float, nargs="*", default=[0.1, 0.2],
                        help="scales of the LatticeSimpleDecoder runs (fixed beam only: it has no max-active and "
                        "a beam scaled to 1.0 takes minutes)")
    parser.add_argument("--out", type=Path, default=Path("exp/synth_digits/bench/decode_search.json"))
    args = parser.parse_args()

    lang = Lang.load(args.lang_dir)
    texts = [reference_text(c) for c in CutSet.from_file(args.lm_cuts)]
    graph_path, info = ensure_decoding_graph(args.lang_dir, texts, args.lm_order)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pushed = push_weights(kaldifst.StdVectorFst.read(str(graph_path)))
        push_seconds = time.perf_counter() - start
        pushed_path = Path(tmp) / "HCLG-pushed.fst"
        pushed.write(str(pushed_path))
        graphs = {"plain": graph_path, "pushed": pushed_path}
        models = acoustic_models(args, graph_path, lang)
        runs = []
        for model, pending in models.items():
            matrices = [ll for _, _, ll in pending]
            frames = sum(m.shape[0] for m in matrices)
            for graph_name, path in graphs.items():
                grid = [("faster", b, s) for b in ("fixed", "scaled") for s in args.scales]
                grid += [("lattice", "fixed", s) for s in args.lattice_scales]
                for decoder, beam_kind, scale in grid:
                    start = time.perf_counter()
                    hyps = search_batch(path, matrices, acoustic_scale=scale, beam=args.beam,
                                        scale_beam=beam_kind == "scaled", max_retries=args.max_retries,
                                        decoder=decoder, extra_pdfs=graph_label_pdfs(info))  # fmt: skip
                    seconds = time.perf_counter() - start
                    wer = compute_wer({u: (ref, " ".join(lang.word_symbols[w] for w in h.word_ids))
                                       for (u, ref, _), h in zip(pending, hyps)}).wer  # fmt: skip
                    run = {"model": model, "graph": graph_name, "decoder": decoder, "beam": beam_kind,
                           "acoustic_scale": scale, "wer": wer,
                           "no_final": sum(not h.reached_final for h in hyps),
                           "retries": sum(h.retries for h in hyps), "utts": len(hyps),
                           "search_seconds": seconds, "rtf": seconds / (frames * 0.01)}  # fmt: skip
                    runs.append(run)
                    print(f"{model:16s} {graph_name:6s} {decoder:7s} {beam_kind:6s} scale {scale:<5g} "
                          f"WER {100 * wer:6.2f}%  no-final {run['no_final']:3d}/{len(hyps)}  "
                          f"retries {run['retries']:3d}  search {seconds:6.2f} s  RTF {run['rtf']:.4f}",
                          flush=True)  # fmt: skip
    write_json(args.out, {"graph": graph_path.name, "graph_states": info.get("num_states"),
                          "push_seconds": push_seconds, "cuts": str(args.cuts), "beam": args.beam,
                          "max_retries": args.max_retries, "runs": runs})  # fmt: skip
    print(json.dumps({"push_seconds": round(push_seconds, 2), "out": str(args.out)}))


if __name__ == "__main__":
    main()
