"""Stage 7: hybrid decoding and scoring (WER, frame accuracy) of a model or an ensemble."""

from __future__ import annotations

from pathlib import Path

from asr_kd.commands.common import add_common


def default_name(models: list[Path]) -> str:
    """The decoding's name: ``ensemble`` for several models, else the checkpoint's directory name
    (``exp/x/teacher-0/best-valid-acc.pt`` -> ``teacher-0``), else its stem; an ONNX file's stem
    (``exp/x/deploy/student-kd.int8.onnx`` -> ``student-kd.int8``)."""
    if len(models) > 1:
        return "ensemble"
    path = Path(models[0])
    if path.suffix == ".onnx":
        return path.stem
    return path.parent.name or path.stem


def _add(sub) -> None:
    p = sub.add_parser(
        "decode",
        help="stage 7: decode any cuts with a model or an ensemble; WER, frame accuracy, result-<name>.json",
        description="Stage 7. Per frame the hybrid score acoustic_scale * (log p(s|x) - log prior(s)): "
        "p(s|x) the model's softmax posterior (several models: the arithmetic mean of their posteriors at "
        "T=1, an ensemble), prior(s) from the aligner's pdf_counts.txt; Viterbi beam search "
        "(kaldi-decoder) over <lang-dir>/HCLG-<key>.fst, built once per n-gram LM on the --lm-cuts "
        "transcripts and keyed by what it is built from (without --lm-cuts: the one cached graph of --lm-order). Cuts with frame_labels also give frame "
        "accuracy; cuts whose features cannot be read are skipped and listed. Writes into --output-dir: "
        "recogs-<name>.txt, errs-<name>.txt, wer-summary-<name>.txt (icefall's layout), "
        "skipped-<name>.txt, and last result-<name>.json (name, role, params, frame_acc, wer, sub, ins, "
        "del, num_frames, num_words, test_set, RTF, decode settings, checkpoint hashes). Skips the work "
        "when a matching result-<name>.json exists (--force redoes it).",
    )
    p.add_argument("--models", type=Path, nargs="+", required=True,
                   help="checkpoints or .onnx files of asr-kd export (run by onnxruntime); more than one: an ensemble")
    p.add_argument("--cuts", type=Path, required=True, help="any CutSet with features, e.g. the aligned test cuts")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="words.txt; HCLG-<key>.fst graphs are cached here")
    p.add_argument("--pdf-counts", type=Path, required=True, help="the align stage's <exp-dir>/pdf_counts.txt")
    p.add_argument("--lm-cuts", type=Path, default=None,
                   help="training cuts whose transcripts train the LM; omit (and --lm-text) to reuse the cached "
                   "graph of --lm-order")  # fmt: skip
    _add_lm_flags(p)
    p.add_argument("--tree", type=Path, default=None,
                   help="the align stage's tree.json for models of context-dependent pdfs (None: the lang's "
                   "monophone pdfs)")
    p.add_argument("--transitions", type=Path, default=None,
                   help="the align stage's transitions.json (None: the lang topology's fixed probabilities)")
    p.add_argument("--output-dir", type=Path, required=True, help="e.g. exp/synth_digits/decode")
    p.add_argument("--name", default=None,
                   help="name in the output files (default: the checkpoint's directory, or 'ensemble')")  # fmt: skip
    p.add_argument("--role", default=None, help="teacher, ensemble, student_hard, student_kd, ... (as given)")
    p.add_argument("--acoustic-scale", type=float, default=0.1,
                   help="multiplies the hybrid log-likelihoods (unused with --tune-cuts)")
    _add_search_flags(p)
    p.add_argument("--device", default="auto", help="of the forward passes: auto, cpu, cuda")
    p.add_argument("--batch-size", type=int, default=32, help="cuts per forward pass")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="DNN/TDNN checkpoints: run the forward pass chunk by chunk, this many output frames per chunk, "
                   "each with the context it needs (same posteriors as whole utterances with --cmvn utterance); "
                   "the algorithmic latency (chunk + look-ahead frames) is logged and recorded. None: whole utterances")
    p.add_argument("--cmvn", choices=("utterance", "running"), default="utterance",
                   help="with --chunk-frames: per-utterance CMVN statistics (as trained) or running statistics of "
                   "the frames received so far (causal)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of the forward pass (torch and onnxruntime); 0: the libraries' defaults")
    p.add_argument("--force", action="store_true", help="decode even if result-<name>.json matches")
    add_common(p)


def _add_lm_flags(p) -> None:
    p.add_argument("--lm-text", type=Path, default=None,
                   help="a text file, one sentence per line, that trains the LM instead of --lm-cuts (e.g. a "
                   "corpus's LM text set)")
    p.add_argument("--lm-order", type=int, default=3, help="n-gram order of the LM")


def _add_search_flags(p) -> None:
    """Tuning and search flags shared by decode and decode-gmm."""
    p.add_argument("--tune-cuts", type=Path, default=None,
                   help="a development CutSet: decode it at each --tune-scales and use the scale of lowest WER "
                   "(never the test set)")
    p.add_argument("--tune-scales", type=float, nargs="+", default=None,
                   help="acoustic scales tried with --tune-cuts (None: 0.05 0.1 0.15 0.2 0.3 0.5 0.7 1.0)")
    p.add_argument("--word-penalty", type=float, default=0.0,
                   help="Kaldi's word insertion penalty: added to the graph cost of every word (positive: fewer "
                   "words, negative: more); unused with --tune-cuts")
    p.add_argument("--tune-word-penalties", type=float, nargs="+", default=[0.0],
                   help="word insertion penalties tried with --tune-cuts, each at every --tune-scales (Kaldi's "
                   "score.sh grid is 0.0 0.5 1.0)")
    p.add_argument("--beam", type=float, default=13.0,
                   help="search beam in scaled log units at the acoustic scale 0.1 (see --fixed-beam)")
    p.add_argument("--fixed-beam", action="store_true",
                   help="keep --beam at every acoustic scale (default: the beam grows with the scale above 0.1, "
                   "beam * scale / 0.1, so that high tuned scales do not prune every path to a final state)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="search an utterance again, beam doubled, when it ends without a final state; the "
                   "record counts the retries and the utterances that never reach one (num_no_final)")
    p.add_argument("--decoder", choices=("faster", "lattice"), default="faster",
                   help="kaldi-decoder's FasterDecoder, or its LatticeSimpleDecoder (best path of the lattice)")
    p.add_argument("--max-active", type=int, default=7000, help="most active states per frame (faster decoder)")
    p.add_argument("--self-loop-scale", type=float, default=0.1,
                   help="scale of the HMM transition costs in HCLG, not of the LM's (Kaldi's mkgraph.sh "
                   "--self-loop-scale: 0.1 for GMM and cross-entropy hybrid models); the graph is cached per value")
    p.add_argument("--nj", type=int, default=1, help="decoding processes")


def _search_kwargs(args) -> dict:
    return {"beam": args.beam, "max_active": args.max_active, "scale_beam": not args.fixed_beam,
            "max_retries": args.max_retries, "decoder": args.decoder, "num_jobs": args.nj,
            "self_loop_scale": args.self_loop_scale, "word_penalty": args.word_penalty,
            "tune_penalties": args.tune_word_penalties,
            "batch_size": args.batch_size, "force": args.force, "tune_cuts": args.tune_cuts,
            "lm_cuts": args.lm_cuts, "lm_text": args.lm_text, "lm_order": args.lm_order,
            **({"tune_scales": args.tune_scales} if args.tune_scales else {})}  # fmt: skip


def _print(result: dict) -> None:
    from asr_kd.decode.record import summary_line

    tuning = result["decode_config"].get("tuning")
    scale = f", acoustic scale {tuning['best']:g} (tuned)" if tuning else ""
    if tuning and "wer_by_penalty" in tuning:
        scale += f", word penalty {tuning['best_word_penalty']:g} (tuned)"
    streaming = result["decode_config"].get("streaming")
    if streaming:
        scale += (f", chunks of {streaming['chunk_frames']} frames ({streaming['cmvn']} CMVN): algorithmic latency "
                  f"{streaming['latency_ms']:g} ms")  # fmt: skip
    print(f"{summary_line(result)}{scale}; {result['num_no_final']} cuts without a final state, "
          f"{result['num_retries']} retries")  # fmt: skip


def _run(args) -> None:
    from asr_kd.decode.run import decode_cuts

    result = decode_cuts(
        args.models, args.cuts, args.lang_dir, args.output_dir, args.name or default_name(args.models),
        role=args.role, pdf_counts=args.pdf_counts, acoustic_scale=args.acoustic_scale, device=args.device,
        tree=args.tree, transitions=args.transitions, chunk_frames=args.chunk_frames, cmvn=args.cmvn,
        threads=args.threads, **_search_kwargs(args),
    )  # fmt: skip
    _print(result)


def _add_gmm(sub) -> None:
    p = sub.add_parser(
        "decode-gmm",
        help="decode any cuts with a GMM-HMM system (the aligner's final.gmm.pt); WER, result-<name>.json",
        description="Scores a GMM-HMM system through the decode stage's search: per frame acoustic_scale * "
        "the GMM log-likelihood of each pdf (no priors; Kaldi's gmm-decode-faster), over the HCLG of the "
        "system's own tree and transitions (monophone systems: the lang's), cached in --lang-dir. Writes the "
        "files of `asr-kd decode` into --output-dir, with role 'gmm' (the report's GMM ladder: mono, tri1, "
        "tri2, then the neural models).",
    )
    p.add_argument("--gmm", type=Path, required=True,
                   help="a GMM system of the align stage: <exp-dir>/<pass>.gmm.pt (mono, tri1, tri2) or final.gmm.pt")
    p.add_argument("--cuts", type=Path, required=True, help="any CutSet with features, e.g. the aligned test cuts")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="words.txt; HCLG-<key>.fst graphs are cached here")
    p.add_argument("--lm-cuts", type=Path, default=None,
                   help="training cuts whose transcripts train the LM; omit (and --lm-text) to reuse the cached "
                   "graph of --lm-order")
    _add_lm_flags(p)
    p.add_argument("--output-dir", type=Path, required=True, help="e.g. exp/synth_digits/decode")
    p.add_argument("--name", default=None, help="name in the output files (default: the --gmm file name before its first '.', e.g. tri1)")
    p.add_argument("--role", default="gmm", help="the record's role")
    p.add_argument("--acoustic-scale", type=float, default=1.0 / 12,
                   help="multiplies the GMM log-likelihoods (Kaldi's GMM acwt; unused with --tune-cuts)")
    _add_search_flags(p)
    p.add_argument("--batch-size", type=int, default=32, help="cuts per batch")
    p.add_argument("--force", action="store_true", help="decode even if result-<name>.json matches")
    add_common(p)


def _run_gmm(args) -> None:
    from asr_kd.decode.gmm_decode import decode_gmm

    result = decode_gmm(
        args.gmm, args.cuts, args.lang_dir, args.output_dir, args.name or Path(args.gmm).name.split(".")[0],
        role=args.role, acoustic_scale=args.acoustic_scale, **_search_kwargs(args),
    )  # fmt: skip
    _print(result)


COMMANDS = {"decode": (_add, _run), "decode-gmm": (_add_gmm, _run_gmm)}
