import json

import pytest

from asr_kd.decode.report import gain_recovered, load_records, make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(name, role, frame_acc, wer, params, **extra):
    record = dict(
        name=name, role=role, models=[f"exp/x/{name}/best.pt"], params=params, frame_acc=frame_acc, wer=wer,
        sub=int(round(wer * 1000 * 0.6)), ins=int(round(wer * 1000 * 0.1)), **{"del": int(round(wer * 1000 * 0.3))},
        num_frames=50000, num_words=1000, num_utts=200, num_skipped=0, num_no_final=0, num_retries=0,
        test_set="data/ali/cuts_test.jsonl.gz", temperature=None, alpha=None, train_fraction=None, arch="dnn",
        size="teacher", decode_config={}, seed=None, transfer=False,
        audio_seconds=360.0, decode_seconds=3.6, forward_seconds=1.0, rtf=0.01, checkpoint_sha256=["0" * 64],
    )  # fmt: skip
    record.update(extra)
    return record


SEEDS = (7, 8, 9)
HARD = {"frame_acc": (0.50, 0.51, 0.49), "wer": (0.13, 0.14, 0.12)}
KD = {"frame_acc": (0.54, 0.545, 0.535), "wer": (0.10, 0.11, 0.09)}
HARD_3 = {"frame_acc": (0.30, 0.32, 0.31), "wer": (0.40, 0.38, 0.42)}
KD_3 = {"frame_acc": (0.45, 0.46, 0.44), "wer": (0.20, 0.21, 0.19)}
TRANSFER = {"frame_acc": (0.55, 0.55, 0.54), "wer": (0.09, 0.10, 0.09)}


def _students(prefix, role, values, fraction=None, **extra):
    return [
        _record(f"{prefix}-s{seed}", role, values["frame_acc"][i], values["wer"][i], 1_000_000, size="student",
                seed=seed, train_fraction=fraction, **extra)
        for i, seed in enumerate(SEEDS)
    ]  # fmt: skip


def _standard_records(sweep_temperatures=(1.0, 5.0)):
    records = [
        _record("teacher-0", "teacher", 0.52, 0.12, 4_000_000, seed=1),
        _record("teacher-1", "teacher", 0.53, 0.11, 4_000_000, seed=2, arch="tdnn"),
        _record("teacher-2", "teacher", 0.54, 0.10, 5_000_000, seed=3, arch="blstm"),
        _record("ensemble", "ensemble", 0.55, 0.08, 13_000_000, models=["a", "b", "c"]),
        *_students("student-hard-f100", "student_hard", HARD, alpha=0.0, temperature=2.0),
        *_students("student-kd-f100", "student_kd", KD, alpha=0.5, temperature=2.0),
        *_students("student-hard-f3", "student_hard", HARD_3, fraction=0.03, alpha=0.0, temperature=1.0),
        *_students("student-kd-f3", "student_kd", KD_3, fraction=0.03, alpha=0.9, temperature=2.0),
        *_students("student-kd-transfer", "student_kd", TRANSFER, alpha=0.5, temperature=2.0, transfer=True),
        _record("lstm-probe", "probe", 0.51, 0.125, 2_000_000),
    ]
    for t in sweep_temperatures:
        records += _students(f"student-kd-T{t:g}", "student_kd_sweep",
                             {"frame_acc": (0.52 + 0.001 * t,) * 3, "wer": (0.10, 0.11, 0.10)},
                             temperature=t, alpha=0.5)  # fmt: skip
    return records


def _write(decode_dir, records):
    decode_dir.mkdir(parents=True, exist_ok=True)
    for r in records:
        (decode_dir / f"result-{r['name']}.json").write_text(json.dumps(r))


def _write_utt_errors(decode_dir, name, errors, words=10):
    lines = ["utt_id\tref_words\terrors\tsub\tins\tdel"]
    lines += [f"u{i:03d}\t{words}\t{e}\t{e}\t0\t0" for i, e in enumerate(errors)]
    (decode_dir / f"utt-errors-{name}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def exp_dir(tmp_path):
    exp = tmp_path / "exp" / "synth_digits"
    _write(exp / "decode", _standard_records())
    for seed in SEEDS:  # 100 utterances of 10 words: hard 13 errors per 10 utterances, kd 10 (the hard one's
        # errors minus 3 of every 10 utterances) -> a clear, consistent win
        hard = [(1 if i % 10 < 3 else 2 if i % 10 < 8 else 0) for i in range(100)]
        kd = [e - 1 if i % 10 in (0, 1, 2) else e for i, e in enumerate(hard)]
        _write_utt_errors(exp / "decode", f"student-hard-f100-s{seed}", hard)
        _write_utt_errors(exp / "decode", f"student-kd-f100-s{seed}", kd)
    (exp / "recipe_config.json").write_text(json.dumps({"num_teachers": 3, "hours": 1.0}))
    return exp


def test_gain_recovered_formula():
    assert gain_recovered(0.50, 0.54, 0.55) == pytest.approx(0.8)
    assert gain_recovered(0.13, 0.09, 0.08) == pytest.approx(0.8)  # on WER: (kd - hard) / (ens - hard)
    assert gain_recovered(0.5, 0.6, 0.5) is None
    assert gain_recovered(None, 0.6, 0.7) is None


def _t_interval(values):
    """Hand-written 95% t-interval (t_{0.975, 2} = 4.302653 for three seeds)."""
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    half = 4.302653 * sd / n**0.5
    return mean, sd, [mean - half, mean + half]


def test_results_json_aggregates_and_comparisons(exp_dir):
    results = make_report(exp_dir)
    saved = json.loads((exp_dir / "results.json").read_text())
    assert saved == {k: v for k, v in results.items() if k != "markdown"}
    assert saved["config"] == {"num_teachers": 3, "hours": 1.0}
    assert saved["test_set"] == "data/ali/cuts_test.jsonl.gz" and saved["num_frames"] == 50000
    # per-seed records stay in "models"; each configuration aggregates its seeds
    assert sum(m["name"].startswith("student-kd-f100-s") for m in saved["models"]) == 3
    configs = {c["name"]: c for c in saved["configurations"]}
    kd = configs["student-kd-f100"]
    assert kd["seeds"] == [7, 8, 9] and kd["members"] == ["student-kd-f100-s7", "student-kd-f100-s8",
                                                         "student-kd-f100-s9"]  # fmt: skip
    mean, sd, ci = _t_interval(KD["frame_acc"])
    assert kd["frame_acc"]["mean"] == pytest.approx(mean) and kd["frame_acc"]["sd"] == pytest.approx(sd)
    assert kd["frame_acc"]["ci95"] == pytest.approx(ci, abs=1e-6)
    assert configs["student-kd-transfer"]["transfer"] is True
    assert configs["student-hard-f3"]["train_fraction"] == 0.03

    comp = saved["comparisons"]
    diffs = [k - h for k, h in zip(KD["frame_acc"], HARD["frame_acc"])]
    mean, _, ci = _t_interval(diffs)
    assert comp["distilled_vs_hard"]["frame_acc"]["mean"] == pytest.approx(0.04)
    assert comp["distilled_vs_hard"]["frame_acc"]["ci95"] == pytest.approx(ci, abs=1e-6) and ci[0] > 0
    gains = [(k - h) / (0.55 - h) for k, h in zip(KD["frame_acc"], HARD["frame_acc"])]  # 0.8, 0.875, 0.75
    assert comp["gain_recovered"]["frame_acc"]["values"] == pytest.approx([0.8, 0.875, 0.75])
    assert comp["gain_recovered"]["frame_acc"]["ci95"] == pytest.approx(_t_interval(gains)[2], abs=1e-6)
    assert saved["gain_recovered"]["frame_acc"] == pytest.approx(sum(gains) / 3)
    wer_gains = [(k - h) / (0.08 - h) for k, h in zip(KD["wer"], HARD["wer"])]
    assert comp["gain_recovered"]["wer"]["mean"] == pytest.approx(sum(wer_gains) / 3)
    rel = [(h - k) / h for k, h in zip(KD["wer"], HARD["wer"])]
    assert comp["wer_relative_reduction"]["wer"]["mean"] == pytest.approx(sum(rel) / 3)
    ens = comp["ensemble_vs_mean_teacher"]
    assert ens["frame_acc"]["values"] == pytest.approx([0.03, 0.02, 0.01]) and ens["frame_acc"]["n"] == 3
    assert saved["ensemble_gain"]["frame_acc"] == pytest.approx(0.02)
    assert saved["ensemble_gain"]["wer"] == pytest.approx(-0.03)
    gap = [(k - h) / (f - h) for k, h, f in zip(KD_3["frame_acc"], HARD_3["frame_acc"], HARD["frame_acc"])]
    assert comp["gap_closed"]["frame_acc"]["values"] == pytest.approx(gap)  # 0.75, 0.736.., 0.7222..
    assert comp["transfer_vs_no_transfer"]["frame_acc"]["values"] == pytest.approx([0.01, 0.005, 0.005])

    mean_t = next(m for m in saved["models"] if m["role"] == "mean_teacher")
    assert mean_t["frame_acc"] == pytest.approx(0.53) and mean_t["members"] == ["teacher-0", "teacher-1", "teacher-2"]

    curve = saved["data_size_curve"]
    assert [r["train_fraction"] for r in curve] == [0.03, 1.0]
    assert curve[0]["kd_minus_hard"]["frame_acc"]["mean"] == pytest.approx(0.14)
    assert curve[1]["gain_recovered"]["frame_acc"]["mean"] == pytest.approx(sum(gains) / 3)
    assert [p["temperature"] for p in saved["temperature_sweep"]] == [1.0, 2.0, 5.0]
    assert saved["temperature_sweep"][1]["name"] == "student-kd-f100"
    assert saved["temperature_sweep"][0]["frame_acc"]["n"] == 3
    table5 = saved["table5"]
    assert [(r["targets"], r["train_fraction"]) for r in table5["rows"]] == [
        ("hard", 0.03), ("soft", 0.03), ("hard", 1.0), ("soft", 1.0)]  # fmt: skip
    assert table5["gap_recovered"]["frame_acc"]["mean"] == pytest.approx(sum(gap) / 3)

    test = saved["wer_tests"]["distilled_vs_hard"]
    assert test["a"] == "student-kd-f100" and test["num_utts"] == 100
    assert test["pooled"]["seeds"] == [7, 8, 9] and len(test["per_seed"]) == 3
    assert test["pooled"]["wer_a"] == pytest.approx(0.10) and test["pooled"]["wer_b"] == pytest.approx(0.13)
    assert test["pooled"]["bootstrap"]["delta"] == pytest.approx(-0.03)
    assert test["pooled"]["bootstrap"]["p_value"] < 0.01 and test["pooled"]["sign"]["p_value"] < 0.01
    assert saved["wer_tests"]["distilled_vs_hard_table5"] is None  # no utt-errors files for 3%


def test_markdown_and_plots(exp_dir):
    results = make_report(exp_dir)
    md = (exp_dir / "RESULTS.md").read_text()
    assert md == results["markdown"]
    assert "| student, distilled T=2 (student-kd-f100) | dnn / student | 1.00M | 4.0x smaller | 3 " \
        "| 54.00 ± 0.50 | 10.00 ± 1.00 |" in md
    assert "| mean of 3 teachers | n/a | 4.33M | 1.1x larger | 1 | 53.00 | 11.00 (66.0/11.0/33.0) |" in md
    assert "| teacher-2 | blstm / teacher | 5.00M | 1.2x larger | 1 | 54.00 | 10.00 (60/10/30) |" in md
    assert "| ensemble of 3 teachers | dnn / teacher | 13.00M | 3.2x larger | 1 | 55.00 |" in md
    assert "| student, distilled + transfer set T=2 (student-kd-transfer) |" in md
    assert "| distilled - hard labels (student-kd-f100 vs student-hard-f100) | +4.00 | [+2.76, +5.24] " in md
    assert "| gain recovered (kd - hard) / (ensemble - hard) (student-kd-f100 vs student-hard-f100) | +80.8% |" in md
    assert "| ensemble - mean teacher (n: teachers) (ensemble vs mean_teacher) | +2.00 | [-0.48, +4.48] | -3.00 |" in md
    assert "| student-kd-f100 vs student-hard-f100 | pooled (3) | 10.00 | 13.00 | -3.00 |" in md
    assert "| 3 | 3 | 31.00 ± 1.00 | 45.00 ± 1.00 |" in md
    assert "| student-hard-f3 | hard | 3 | 3 | 31.00 ± 1.00 | 40.00 ± 2.00 |" in md
    assert "| 2 | student-kd-f100 | 0.5 | 3 | 54.00 ± 0.50 | 10.00 ± 1.00 |" in md
    assert "| hard labels | student-hard-f100 | 0 | 3 | 50.00 ± 1.00 | 13.00 ± 1.00 |" in md
    assert "## Other models" in md and "lstm-probe" in md
    assert "student-kd-f100-s7 0.0100" in md and "50000 frames, 1000 words" in md
    for png in ("temperature_sweep.png", "data_size_curve.png"):
        assert (exp_dir / png).read_bytes()[:8] == PNG_MAGIC
    assert not list(exp_dir.glob(".tmp.*"))


def test_fractions_with_float_noise_are_one_configuration(tmp_path):
    """A recipe's arithmetic gives 0.1 * 0.3 for 3% and a sum of tenths for the full data: the report keys,
    finds and tabulates them as 0.03 and 1.0 (an exact comparison lost the full-data hard-label row)."""
    noisy = {None: sum([0.1] * 10), 0.03: 0.1 * 0.3}  # 0.9999999999999999, 0.030000000000000002
    records = _standard_records(sweep_temperatures=())
    for r in records:
        if r["name"].startswith(("student-hard-f100", "student-kd-f3")) and r["seed"] != 8:
            r["train_fraction"] = noisy[r["train_fraction"]]
    _write(tmp_path / "dec", records)
    results = make_report(tmp_path / "exp", decode_dir=tmp_path / "dec", plot=False)
    configs = {c["name"]: c for c in results["configurations"]}
    hard, kd_3 = configs["student-hard-f100"], configs["student-kd-f3"]
    assert hard["seeds"] == [7, 8, 9] and hard["train_fraction"] == 1.0
    assert kd_3["seeds"] == [7, 8, 9] and kd_3["train_fraction"] == 0.03
    assert [r["train_fraction"] for r in results["data_size_curve"]] == [0.03, 1.0]
    assert [(r["targets"], r["train_fraction"]) for r in results["table5"]["rows"]] == [
        ("hard", 0.03), ("soft", 0.03), ("hard", 1.0), ("soft", 1.0)]  # fmt: skip
    assert results["comparisons"]["distilled_vs_hard"]["frame_acc"]["mean"] == pytest.approx(0.04)
    md = results["markdown"]
    assert "| hard labels | student-hard-f100 | 0 | 3 | 50.00 ± 1.00 | 13.00 ± 1.00 |" in md
    assert "(student-hard-f100) | dnn / student | 1.00M |" in md


def test_no_plot_with_one_sweep_point_and_missing_roles(tmp_path, caplog):
    records = [r for r in _standard_records(sweep_temperatures=()) if r["role"] not in ("ensemble", "teacher")]
    records = [r for r in records if r["train_fraction"] is None]
    _write(tmp_path / "dec", records)
    output = tmp_path / "out" / "report.md"
    results = make_report(tmp_path / "exp", decode_dir=tmp_path / "dec", output=output)
    assert not (tmp_path / "exp" / "temperature_sweep.png").exists()
    assert not (tmp_path / "exp" / "data_size_curve.png").exists()
    assert output.read_text() == results["markdown"]
    assert results["gain_recovered"] == {"frame_acc": None, "wer": None}
    assert results["ensemble_gain"] == {"frame_acc": None, "wer": None}
    assert results["config"] == {} and results["table5"]["rows"] == []
    assert results["wer_tests"]["distilled_vs_hard"] is None  # no utt-errors files
    assert "no decode record with role 'ensemble'" in caplog.text
    assert "utt-errors-student-hard-f100-s7.tsv does not exist" in caplog.text


def test_single_seed_has_no_interval(tmp_path):
    records = [_record("teacher-0", "teacher", 0.5, 0.1, 10), _record("ensemble", "ensemble", 0.6, 0.05, 10),
               _record("student-hard", "student_hard", 0.4, 0.2, 10, seed=3, alpha=0.0),
               _record("student-kd", "student_kd", 0.5, 0.15, 10, seed=3, alpha=0.5, temperature=2.0)]  # fmt: skip
    _write(tmp_path / "decode", records)
    results = make_report(tmp_path, plot=False)
    gain = results["comparisons"]["gain_recovered"]["frame_acc"]
    assert gain["mean"] == pytest.approx(0.5) and gain["sd"] is None and gain["ci95"] is None
    assert "| +50.0% | n/a |" in results["markdown"]


def test_only_others_and_no_plot_flag(tmp_path):
    _write(tmp_path / "decode", _standard_records(sweep_temperatures=(1.0, 4.0, 8.0)))
    make_report(tmp_path, plot=False)
    assert not (tmp_path / "temperature_sweep.png").exists()
    _write(tmp_path / "d2", [_record("x", "probe", None, 0.2, 10), _record("y", None, 0.4, 0.3, 10)])
    md = make_report(tmp_path, decode_dir=tmp_path / "d2")["markdown"]
    assert "No teacher, ensemble or student records." in md
    assert "| x (probe) | dnn / teacher | 10 | n/a | 1 | n/a | 20.00 (120/20/60) |" in md and "| y |" in md


@pytest.mark.parametrize(
    "change, field",
    [({"wer": "bad"}, "wer"), ({"frame_acc": 1.5}, "frame_acc"), ({"params": None}, "params"),
     ({"temperature": -1}, "temperature")],
)  # fmt: skip
def test_malformed_record_names_file_and_field(tmp_path, change, field):
    _write(tmp_path, [{**_record("teacher-0", "teacher", 0.5, 0.1, 10), **change}])
    with pytest.raises(ValueError, match=rf"result-teacher-0\.json: field `{field}`"):
        load_records(tmp_path)


def test_missing_field_bad_json_and_no_records(tmp_path):
    record = _record("teacher-0", "teacher", 0.5, 0.1, 10)
    del record["num_words"]
    _write(tmp_path, [record])
    with pytest.raises(ValueError, match=r"result-teacher-0\.json: field `num_words` is missing"):
        load_records(tmp_path)
    (tmp_path / "result-teacher-0.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"result-teacher-0\.json: not valid JSON"):
        load_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="result-"):
        load_records(tmp_path / "empty")


def test_cli(exp_dir, capsys):
    from asr_kd.cli import main

    assert main(["report", str(exp_dir), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "## Table 1" in out and "| 54.00 ± 0.50 |" in out
    assert not (exp_dir / "temperature_sweep.png").exists()
    (exp_dir / "decode" / "result-ensemble.json").write_text("[]")
    assert main(["report", str(exp_dir)]) == 1
    assert "result-ensemble.json" in capsys.readouterr().err


def test_duplicate_configurations_warn_and_duplicate_names_fail(tmp_path, caplog):
    records = _standard_records() + [_record("student-kd2", "student_kd", 0.53, 0.1, 10, temperature=3.0, alpha=0.5)]
    _write(tmp_path / "decode", records)
    results = make_report(tmp_path, plot=False)
    assert "2 configurations with role 'student_kd', fraction 1, transfer False; the tables use 'student-kd-f100'" \
        in caplog.text
    assert results["comparisons"]["distilled_vs_hard"]["frame_acc"]["mean"] == pytest.approx(0.04)
    assert [p["temperature"] for p in results["temperature_sweep"]] == [1.0, 2.0, 3.0, 5.0]
    (tmp_path / "decode" / "result-copy.json").write_text(json.dumps(records[0]))
    with pytest.raises(ValueError, match=r"result-teacher-0\.json: field `name` 'teacher-0' is also the name in"):
        load_records(tmp_path / "decode")


def test_ensemble_members_are_summarised() -> None:
    from asr_kd.decode.tables import _arch

    assert _arch({"arch": ["tdnn"] * 3, "size": ["teacher"] * 3}) == "3 x tdnn / teacher"
    assert _arch({"arch": ["dnn", "tdnn"], "size": ["teacher", "teacher"]}) == "dnn / teacher + tdnn / teacher"
    assert _arch({"arch": "tdnn", "size": "student"}) == "tdnn / student"


def test_gmm_ladder_and_search_counts(tmp_path):
    """GMM systems (role gmm) head a ladder table by name, then the hybrid models; every record's count of
    utterances without a final state and of retries is shown."""
    records = [
        _record("tri1", "gmm", 0.60, 0.05, 300_000, arch="gmm", size="N=3", num_no_final=1, num_retries=4),
        _record("mono", "gmm", 0.45, 0.20, 100_000, arch="gmm", size="mono"),
        _record("teacher-0", "teacher", 0.52, 0.04, 4_000_000, seed=1, num_retries=2),
    ]
    exp = tmp_path / "exp"
    _write(exp / "decode", records)
    md = make_report(exp, plot=False)["markdown"]
    ladder = md[md.index("## System ladder"):]
    assert ladder.index("| mono | GMM-HMM (mono) | 100.0k | 45.00 | 20.00 (120/20/60) | 0 / 0 |") \
        < ladder.index("| tri1 | GMM-HMM (N=3) |") < ladder.index("| teacher-0 | hybrid, teacher | 4.00M |")
    assert "| tri1 | GMM-HMM (N=3) | 300.0k | 60.00 | 5.00 (30/5/15) | 1 / 4 |" in ladder
    assert "retries: mono 0/0, tri1 1/4, teacher-0 0/2" in md or "teacher-0 0/2" in md
    assert "## Other models" not in md  # gmm is a role of its own


def test_search_text_follows_the_records_beam_and_given_scales(tmp_path):
    """The search paragraph says which beam the records used; models decoded at a given scale are listed."""
    tuned = {"scale_beam": False, "acoustic_scale": "tuned", "tuning": {"best": 0.2}}
    records = [
        _record("teacher-0", "teacher", 0.52, 0.04, 4_000_000, seed=1, decode_config=tuned),
        _record("student-x", "other", 0.50, 0.05, 300_000, decode_config={"scale_beam": False, "acoustic_scale": 0.15}),
    ]
    exp = tmp_path / "exp"
    _write(exp / "decode", records)
    md = make_report(exp, plot=False)["markdown"]
    assert "Search (a fixed beam at every acoustic scale;" in md
    assert "Decoded at a given acoustic scale (not tuned): student-x 0.15." in md
    assert "tuned on the development cuts: teacher-0 0.2" in md
    records[1]["decode_config"]["scale_beam"] = True
    _write(exp / "decode", records)
    assert "Search (fixed and scaled beams;" in make_report(exp, plot=False)["markdown"]
