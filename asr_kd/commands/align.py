"""Stage 3: flat-start forced alignment and its report."""

from __future__ import annotations

from pathlib import Path

from asr_kd.commands.common import add_common, add_max_skipped_share


# ------------------------------------------------------------------------------------------- align
def _add_align(sub) -> None:
    p = sub.add_parser(
        "align",
        help="stage 3: flat-start forced alignment of every cut to per-frame pdf ids",
        description="Stage 3. Trains a monophone GMM-HMM from a flat start (equal alignment, then "
        "Viterbi re-estimation with kaldi-decoder) on the train split, aligns every split and writes "
        "<output-dir>/<corpus>_cuts_<split>.jsonl.gz with a `frame_labels` TemporalArray (int32 pdf "
        "ids, exact, HDF5), pdf_counts.txt (priors) and, where the cuts carry reference phone tiers, "
        "report.json/report.txt into --exp-dir. Holds a lock on --output-dir and --exp-dir; an aligned split "
        "is reused only when aligned by the same final.gmm.pt from the same cuts (its .key.json) and its "
        "files are as recorded. Cuts with unreadable or non-finite features are skipped by id; a split "
        "skipping more than --max-skipped-share fails; a write error stops the stage.",
    )
    p.add_argument("--cuts-dir", type=Path, default=Path("data/fbank"), help="where stage 1 wrote the cuts")
    p.add_argument("--corpus", required=True, help="manifest prefix of the cuts, e.g. synth_digits")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="stage 2's lang directory")
    p.add_argument("--output-dir", type=Path, default=Path("data/ali"), help="aligned cuts and frame labels go here")
    p.add_argument("--exp-dir", type=Path, required=True, help="the aligner's models and reports, e.g. exp/<recipe>/align")
    p.add_argument("--splits", nargs="+", default=["train", "dev", "test"], help="splits to align")
    p.add_argument("--train-split", default="train", help="the split the aligner is trained on")
    p.add_argument("--nj", type=int, default=1, help="parallel Viterbi processes")
    p.add_argument("--device", default="auto", help="GMM computations: 'auto', 'cpu', 'cuda'")
    p.add_argument("--num-iters", type=int, default=25, help="monophone re-estimation iterations")
    p.add_argument("--total-gauss", type=int, default=1000, help="Gaussians over all pdfs at the end")
    p.add_argument("--max-utts", type=int, default=3000, help="training subset size (utterances)")
    p.add_argument(
        "--mono-utts", type=int, default=0,
        help="the monophones train on this many of the training utterances (random, seeded; 0: all), as "
        "Kaldi's recipes run train_mono.sh on a subset; the triphone passes start from a monophone "
        "alignment of all of them",
    )  # fmt: skip
    p.add_argument(
        "--acoustic-scale", type=float, default=0.1,
        help="GMM log-likelihood scale against HMM transition costs in the Viterbi search",
    )  # fmt: skip
    p.add_argument(
        "--self-loop-scale", type=float, default=1.0,
        help="scale of the HMM transition costs (self-loops and forward transitions) in every Viterbi "
        "search, Kaldi's --self-loop-scale (its aligners use 0.1; on synth_rm 1.0 aligned about a point "
        "closer to the reference)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="flat start and training subset")
    p.add_argument(
        "--init-from-reference", action="store_true",
        help="an oracle, for diagnosis: start the monophone training from the training cuts' reference "
        "phone tiers (each phone's frames split evenly over its HMM states) instead of the flat start",
    )  # fmt: skip
    p.add_argument(
        "--retry-beam", type=float, default=1000.0,
        help="triphone passes: Viterbi beam of the second try when the first (beam 10) reaches no final "
        "state (Kaldi: 40); training graphs are small, so a wide retry costs little. The monophone flat "
        "start keeps Kaldi's 40: an utterance it cannot align keeps its previous labels, and on synth_rm "
        "that gave better monophones than a wide retry (recipes/synth_rm/RESULTS.md)",
    )  # fmt: skip
    p.add_argument(
        "--passes", nargs="*", default=["tri1", "tri2"], choices=("tri1", "tri2"),
        help="triphone passes after the monophone flat start, in order: tri1 (deltas, Kaldi's "
        "train_deltas.sh), tri2 (splice + LDA + MLLT, train_lda_mllt.sh); none: align with the monophones",
    )  # fmt: skip
    p.add_argument("--num-leaves", type=int, nargs=2, default=[500, 500], metavar=("TRI1", "TRI2"),
                   help="tree leaves (tied states, pdfs) of tri1 and tri2")
    p.add_argument("--tri-total-gauss", type=int, nargs=2, default=[4000, 4000], metavar=("TRI1", "TRI2"),
                   help="Gaussians over all pdfs at the end of tri1 and tri2")
    p.add_argument("--tri-iters", type=int, default=20, help="Viterbi iterations of each triphone pass")
    p.add_argument("--min-leaf-count", type=float, default=50.0, help="frames each tree leaf needs at least")
    p.add_argument("--boost-silence", type=float, default=1.0,
                   help="multiply silence pdfs' likelihoods by this in every realignment, monophone and triphone "
                   "passes (Kaldi's --boost-silence)")
    p.add_argument(
        "--reference-phones", choices=("same", "timit"), default="same",
        help="how reference 'phone' tiers map to the lang's phones for the report: 'same' (synthetic "
        "corpora) or 'timit' (61 TIMIT phones -> ARPAbet, closures joined to their stops)",
    )  # fmt: skip
    add_max_skipped_share(p, "cuts")
    add_common(p)


def _reference_map(name: str):
    if name == "timit":
        from data_prep.timit import timit_reference_phone

        return timit_reference_phone
    return None


def _run_align(args) -> None:
    from asr_kd.align.stage import align_corpus
    from asr_kd.align.train_mono import MonoConfig

    cfg = MonoConfig(
        num_iters=args.num_iters, total_gauss=args.total_gauss, max_utts=args.max_utts, mono_utts=args.mono_utts,
        acoustic_scale=args.acoustic_scale, seed=args.seed, init="reference" if args.init_from_reference else "flat",
        boost_silence=args.boost_silence, self_loop_scale=args.self_loop_scale,
    )  # fmt: skip
    align_corpus(
        args.cuts_dir, args.corpus, args.lang_dir, args.output_dir, args.exp_dir, splits=args.splits,
        train_split=args.train_split, num_jobs=args.nj, device=args.device, config=cfg,
        ref_map=_reference_map(args.reference_phones), passes=_tri_passes(args),
        max_skipped_share=args.max_skipped_share,
    )  # fmt: skip


def _tri_passes(args) -> list:
    from asr_kd.align.train_tri import TriConfig

    kinds = {"tri1": (0, "deltas"), "tri2": (1, "lda_mllt")}
    passes = []
    for name in args.passes:
        k, kind = kinds[name]
        passes.append((name, TriConfig(
            kind=kind, num_leaves=args.num_leaves[k], total_gauss=args.tri_total_gauss[k], num_iters=args.tri_iters,
            min_leaf_count=args.min_leaf_count, boost_silence=args.boost_silence,
            acoustic_scale=args.acoustic_scale, self_loop_scale=args.self_loop_scale, seed=args.seed,
            retry_beam=args.retry_beam,
        )))  # fmt: skip
    return passes


def _add_align_report(sub) -> None:
    p = sub.add_parser(
        "align-report",
        help="score aligned cuts against their reference phone alignments",
        description="Frame-level phone agreement, share of phone boundaries within 10/20/40 ms and the "
        "worst phones, for cuts with `frame_labels` and a reference 'phone' alignment tier.",
    )
    p.add_argument("cuts", type=Path, help="aligned cuts (stage 3 output)")
    p.add_argument("--lang-dir", type=Path, default=Path("data/lang"), help="the lang directory of the alignment")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--tree", type=Path, default=None,
                   help="the alignment's tree.json (maps tied-state pdfs to phones); default: the lang's monophone pdfs")
    p.add_argument("--reference-phones", choices=("same", "timit"), default="same",
                   help="how reference 'phone' tiers map to the lang's phones (see `asr-kd align --help`)")
    add_common(p)


def _run_align_report(args) -> None:
    from lhotse import CutSet

    from asr_kd.align.report import format_report
    from asr_kd.align.stage import score_alignments
    from asr_kd.data.lang import Lang
    from asr_kd.utils import write_json

    pdf_phone = None
    if args.tree is not None:
        from asr_kd.hmm.tree import ContextDependency

        pdf_phone = ContextDependency.load(args.tree).pdf_phone
    report = score_alignments(
        CutSet.from_file(args.cuts), Lang.load(args.lang_dir), None, _reference_map(args.reference_phones),
        pdf_phone=pdf_phone,
    )
    if report is None:
        raise ValueError(f"no cut in {args.cuts} has a reference 'phone' alignment tier")
    if args.json:
        write_json(args.json, report)
    print(format_report(report))


COMMANDS = {
    "align": (_add_align, _run_align),
    "align-report": (_add_align_report, _run_align_report),
}
