"""Stage 7 (end): the experiment's report from its decode records."""

from __future__ import annotations

from pathlib import Path

from asr_kd.commands.common import add_common


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="results.json, RESULTS.md (Table 1, differences with 95%% CIs, paired WER tests, data-size curve, "
        "Table 5, temperature sweep) and plots from the decode records",
        description="Reads every <decode-dir>/result-*.json (one per decoded model, from `asr-kd decode`) and "
        "the utt-errors-<name>.tsv beside it; groups the students into configurations that differ only by "
        "seed (mean, sd, 95%% t-interval); compares them seed by seed (distilled vs hard labels, gain "
        "recovered (kd - hard) / (ensemble - hard), relative WER reduction, ensemble vs mean teacher, the "
        "gap closed at the Table 5 fraction, transfer set vs none); tests distilled vs hard-label WER over "
        "the test utterances (paired bootstrap, sign test, matched pairs); writes <exp_dir>/results.json, "
        "the markdown tables (printed too), <exp_dir>/temperature_sweep.png (>= 2 temperatures) and "
        "<exp_dir>/data_size_curve.png (>= 2 training fractions).",
    )
    p.add_argument("exp_dir", type=Path, help="e.g. exp/synth_digits; its recipe_config.json becomes the config")
    p.add_argument("--decode-dir", type=Path, default=None, help="default <exp_dir>/decode (not recursive)")
    p.add_argument("--output", type=Path, default=None, help="the markdown file; default <exp_dir>/RESULTS.md")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plots")
    p.add_argument("--table5-fraction", type=float, default=None,
                   help="training fraction of the Table 5 rows and the gap closed (None: the config's "
                   "table5_fraction, else 0.03)")  # fmt: skip
    add_common(p)


def _run_report(args) -> None:
    from asr_kd.decode.report import make_report

    results = make_report(args.exp_dir, decode_dir=args.decode_dir, output=args.output, plot=not args.no_plot,
                          table5_fraction=args.table5_fraction)
    print(results["markdown"], end="")


def _add_write_config(sub) -> None:
    p = sub.add_parser(
        "write-config",
        help="write KEY=VALUE settings as a JSON object (a recipe's resolved settings, recipe_config.json)",
        description="Writes the settings as one JSON object, atomically. A value is read as JSON when it is "
        "valid JSON (numbers, true/false, null), else kept as a string; dots in a key nest it "
        "(recipe.name=x -> {\"recipe\": {\"name\": \"x\"}}).",
    )
    p.add_argument("output", type=Path, help="the JSON file to write, e.g. exp/<recipe>/recipe_config.json")
    p.add_argument("settings", nargs="*", help="KEY=VALUE pairs")
    add_common(p)


def _run_write_config(args) -> None:
    from asr_kd.utils import settings_from_pairs, write_json

    write_json(args.output, settings_from_pairs(args.settings))


COMMANDS = {"report": (_add_report, _run_report), "write-config": (_add_write_config, _run_write_config)}
