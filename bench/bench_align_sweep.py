"""Sweep of the GMM ladder's settings: one monophone flat start, many triphone ladders on top of it.

Usage:
    OMP_NUM_THREADS=1 python bench/bench_align_sweep.py --cuts-dir data/fbank --corpus synth_rm \\
        --lang-dir data/lang_synth_rm --out exp/sweep.json --nj 2 \\
        --variant l500=deltas --variant l1000=deltas/num_leaves=1000 \\
        --variant l1000-lda=deltas/num_leaves=1000,lda_mllt/num_leaves=1000

Trains the monophone system of ``asr-kd align`` once on ``--train-split`` (``--mono key=value`` changes
its :class:`~asr_kd.align.train_mono.MonoConfig`, e.g. ``--mono num_iters=40``), keeps its training
alignments, then trains every ``--variant NAME=PASS[,PASS...]``: the triphone passes in order, each
``KIND[/key=value...]`` with KIND ``deltas`` (tri1) or ``lda_mllt`` (tri2) and the keys of
:class:`~asr_kd.align.train_tri.TriConfig`. Passes shared by variants (the same settings after the same
passes) are trained once. Every pass is scored on ``--score-splits`` by aligning them in memory (as the
stage's ``passes.json``). Results go to ``--out`` (JSON, rewritten after every pass); ``--save-dir``
also keeps each system (``mono.gmm.pt``, ``<variant>.gmm.pt``) for ``asr-kd decode-gmm``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from asr_kd.align.stage import SEARCH_KEYS, _headline, _load_many, _read_cuts, _score_system, train_monophones
from asr_kd.align.train_mono import MonoConfig
from asr_kd.align.train_tri import TriConfig, train_tri
from asr_kd.data.lang import Lang
from asr_kd.hmm.system import GmmSystem, lang_sha256
from asr_kd.hmm.transitions import TransitionModel
from asr_kd.hmm.tree import ContextDependency


def _convert(cls, key: str, value: str):
    types = {f.name: f.type for f in fields(cls)}
    if key not in types:
        raise SystemExit(f"{cls.__name__} has no field {key!r} (fields: {sorted(types)})")
    kind = str(types[key])
    if "tuple" in kind:
        return tuple(int(v) for v in value.split(":") if v)
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    return value


def parse_pass(text: str) -> TriConfig:
    kind, *settings = text.split("/")
    cfg = TriConfig(kind=kind)
    for item in settings:
        key, value = item.split("=", 1)
        cfg = replace(cfg, **{key: _convert(TriConfig, key, value)})
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts-dir", type=Path, required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--lang-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--score-splits", nargs="+", default=["test"])
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--mono", action="append", default=[], help="MonoConfig key=value (repeatable)")
    parser.add_argument("--variant", action="append", default=[], help="NAME=PASS[,PASS...] (repeatable)")
    parser.add_argument("--save-dir", type=Path, default=None,
                        help="also save mono.gmm.pt and <variant>.gmm.pt (its last pass) here, for asr-kd decode-gmm")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dev = torch.device("cpu")
    lang = Lang.load(args.lang_dir)
    mono_cfg = MonoConfig()
    for item in args.mono:
        key, value = item.split("=", 1)
        mono_cfg = replace(mono_cfg, **{key: _convert(MonoConfig, key, value)})
    variants = []
    for text in args.variant:
        name, spec = text.split("=", 1)
        variants.append((name, [parse_pass(p) for p in spec.split(",") if p]))
    score_cuts = {s: _read_cuts(args.cuts_dir, args.corpus, s) for s in args.score_splits}
    result: dict = {"mono_config": repr(mono_cfg), "variants": {}, "passes": {}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.out)

    def score(system: GmmSystem) -> dict:
        return {
            s: _headline(_score_system(c, lang, system, dev, args.nj, None)) for s, c in score_cuts.items()
        }

    skipped: dict[str, str] = {}
    utts = _load_many(list(_read_cuts(args.cuts_dir, args.corpus, args.train_split)), lang, skipped, "load",
                      self_loop_scale=mono_cfg.self_loop_scale)
    start = time.perf_counter()
    gmm, utts = train_monophones(utts, lang, mono_cfg, dev, args.nj, skipped)
    mono_s = time.perf_counter() - start
    mono_pass = {k: getattr(mono_cfg, k) for k in SEARCH_KEYS}
    mono = GmmSystem(
        "mono",
        gmm,
        {"kind": "deltas"},
        ContextDependency.monophone(lang),
        TransitionModel.from_lang(lang),
        lang_sha256(lang),
        {"pass": mono_pass},
    )
    result["passes"]["mono"] = {"seconds": mono_s, "scores": score(mono)}
    save()
    if args.save_dir is not None:
        mono.save(args.save_dir / "mono.gmm.pt")
    cache: dict[tuple, tuple[GmmSystem, list[np.ndarray]]] = {(): (mono, [u.labels.copy() for u in utts])}
    for name, passes in variants:
        key: tuple = ()
        for k, cfg in enumerate(passes):
            parent = key
            key = (*key, repr(cfg))
            if key in cache:
                continue
            prev, labels = cache[parent]
            for utt, lab in zip(utts, labels):
                utt.labels = lab.copy()
            start = time.perf_counter()
            system = train_tri(utts, prev, lang, cfg, dev, args.nj, name=f"tri{k + 1}")
            seconds = time.perf_counter() - start
            cache[key] = (system, [u.labels.copy() for u in utts])
            result["passes"][" > ".join(key)] = {
                "seconds": seconds,
                "num_pdfs": system.num_pdfs,
                "scores": score(system),
            }
            save()
        result["variants"][name] = [" > ".join(key[: k + 1]) for k in range(len(key))]
        save()
        if args.save_dir is not None:
            cache[key][0].save(args.save_dir / f"{name}.gmm.pt")
    for name, chain in result["variants"].items():
        for k, pass_key in enumerate(["mono", *chain]):
            r = result["passes"][pass_key]
            for split, s in r["scores"].items():
                print(
                    f"{name:<14}{k:<3}{split:<6}frames {100 * s['frame_agreement']:.2f}%  <=20 ms "
                    f"{100 * s['boundary_within_20ms']:.2f}%  ({r['seconds']:.0f} s)"
                )


if __name__ == "__main__":
    main()
