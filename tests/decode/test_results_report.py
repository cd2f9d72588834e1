import json

import pytest

from asr_kd.decode.report import gain_recovered, load_records, make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(name, role, frame_acc, wer, params, **extra):
    record = dict(
        name=name, role=role, models=[f"exp/x/{name}/best.pt"], params=params, frame_acc=frame_acc, wer=wer,
        sub=int(round(wer * 1000 * 0.6)), ins=int(round(wer * 1000 * 0.1)), **{"del": int(round(wer * 1000 * 0.3))},
        num_frames=50000, num_words=1000, num_utts=200, num_skipped=0, num_no_final=0, num_retries=0, test_set="data/ali/cuts_test.jsonl.gz",
        temperature=None, alpha=None, train_fraction=None, arch="dnn", size="teacher", decode_config={},
        audio_seconds=360.0, decode_seconds=3.6, forward_seconds=1.0, rtf=0.01, checkpoint_sha256=["0" * 64],
    )  # fmt: skip
    record.update(extra)
    return record


def _standard_records(sweep_temperatures=(1.0, 5.0)):
    records = [
        _record("teacher-0", "teacher", 0.52, 0.12, 4_000_000),
        _record("teacher-1", "teacher", 0.53, 0.11, 4_000_000),
        _record("teacher-2", "teacher", 0.54, 0.10, 4_000_000),
        _record("ensemble", "ensemble", 0.55, 0.08, 12_000_000, models=["a", "b", "c"]),
        _record("student-hard", "student_hard", 0.50, 0.13, 1_000_000, size="student", alpha=0.0),
        _record("student-kd", "student_kd", 0.54, 0.09, 1_000_000, size="student", temperature=2.0, alpha=0.5),
        _record("student-hard-3pct", "student_hard_3pct", 0.30, 0.40, 1_000_000, train_fraction=0.03),
        _record("student-kd-3pct", "student_kd_3pct", 0.45, 0.20, 1_000_000, train_fraction=0.03, temperature=2.0),
        _record("lstm-probe", "probe", 0.51, 0.125, 2_000_000),
    ]
    for t in sweep_temperatures:
        records.append(_record(f"student-kd-T{t:g}", "student_kd_sweep", 0.52 + 0.001 * t, 0.10, 1_000_000,
                               temperature=t, alpha=0.5))  # fmt: skip
    return records


def _write(decode_dir, records):
    decode_dir.mkdir(parents=True, exist_ok=True)
    for r in records:
        (decode_dir / f"result-{r['name']}.json").write_text(json.dumps(r))


@pytest.fixture
def exp_dir(tmp_path):
    exp = tmp_path / "exp" / "synth_digits"
    _write(exp / "decode", _standard_records())
    (exp / "recipe_config.json").write_text(json.dumps({"num_teachers": 3, "hours": 1.0}))
    return exp


def test_gain_recovered_formula():
    assert gain_recovered(0.50, 0.54, 0.55) == pytest.approx(0.8)
    assert gain_recovered(0.13, 0.09, 0.08) == pytest.approx(0.8)  # on WER: (kd - hard) / (ens - hard)
    assert gain_recovered(0.5, 0.6, 0.5) is None
    assert gain_recovered(None, 0.6, 0.7) is None


def test_results_json_and_markdown(exp_dir):
    results = make_report(exp_dir)
    saved = json.loads((exp_dir / "results.json").read_text())
    assert saved == {k: v for k, v in results.items() if k != "markdown"}
    assert saved["config"] == {"num_teachers": 3, "hours": 1.0}
    assert saved["test_set"] == "data/ali/cuts_test.jsonl.gz" and saved["num_frames"] == 50000
    assert saved["gain_recovered"]["frame_acc"] == pytest.approx(0.8)
    assert saved["gain_recovered"]["wer"] == pytest.approx((0.09 - 0.13) / (0.08 - 0.13))
    roles = {m["role"] for m in saved["models"]}
    assert roles == {"teacher", "mean_teacher", "ensemble", "student_hard", "student_kd", "student_hard_3pct",
                     "student_kd_3pct", "student_kd_sweep", "probe"}  # fmt: skip
    mean = next(m for m in saved["models"] if m["role"] == "mean_teacher")
    assert mean["frame_acc"] == pytest.approx(0.53) and mean["wer"] == pytest.approx(0.11)
    assert mean["params"] == 4_000_000 and mean["members"] == ["teacher-0", "teacher-1", "teacher-2"]
    assert mean["sub"] == pytest.approx(66.0)
    assert saved["ensemble_gain"]["frame_acc"] == pytest.approx(0.02)
    assert saved["ensemble_gain"]["wer"] == pytest.approx(-0.03)
    assert [p["temperature"] for p in saved["temperature_sweep"]] == [1.0, 2.0, 5.0]
    assert saved["temperature_sweep"][1]["name"] == "student-kd"
    table5 = saved["table5"]
    assert [r["role"] for r in table5["rows"]] == ["student_hard", "student_hard_3pct", "student_kd_3pct", "student_kd"]
    assert table5["gap_recovered"]["frame_acc"] == pytest.approx(0.75)  # (0.45 - 0.30) / (0.50 - 0.30)

    md = (exp_dir / "RESULTS.md").read_text()
    assert md == results["markdown"]
    assert "| student, distilled T=2 (student-kd) | dnn / student | 1.00M | 4.0x smaller | 54.00 | 9.00 (54/9/27) " \
        "| 80.0% (frame acc), 80.0% (WER) |" in md
    assert "| mean of 3 teachers | n/a | 4.00M | 1.0x | 53.00 | 11.00 (66.0/11.0/33.0) |" in md
    assert "| ensemble of 3 teachers | dnn / teacher | 12.00M | 3.0x larger | 55.00 |" in md
    assert "| student-hard-3pct | hard | 3 | 30.00 | 40.00 |" in md
    assert "| student-hard | hard | 100 * | 50.00 | 13.00 |" in md
    assert "| 2 | student-kd | 0.5 | 54.00 | 9.00 |" in md
    assert "| hard labels | student-hard | 0 | 50.00 | 13.00 |" in md
    assert "## Other models" in md and "lstm-probe" in md
    assert "+2.00 points frame accuracy" in md and "75.0% of the frame-accuracy gap" in md
    assert "student-kd 0.0100" in md and "50000 frames, 1000 words" in md
    assert (exp_dir / "temperature_sweep.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(exp_dir.glob(".tmp.*"))


def test_no_plot_with_one_sweep_point_and_missing_roles(tmp_path, caplog):
    records = [r for r in _standard_records(sweep_temperatures=()) if r["role"] not in ("ensemble", "teacher")]
    _write(tmp_path / "dec", records)
    output = tmp_path / "out" / "report.md"
    results = make_report(tmp_path / "exp", decode_dir=tmp_path / "dec", output=output)
    assert not (tmp_path / "exp" / "temperature_sweep.png").exists()
    assert output.read_text() == results["markdown"]
    assert results["gain_recovered"] == {"frame_acc": None, "wer": None}
    assert results["ensemble_gain"] == {"frame_acc": None, "wer": None}
    assert results["config"] == {}
    assert "no decode record with role 'ensemble'" in caplog.text
    assert "n/a (frame acc)" in results["markdown"]


def test_only_others_and_no_plot_flag(tmp_path):
    _write(tmp_path / "decode", _standard_records(sweep_temperatures=(1.0, 4.0, 8.0)))
    make_report(tmp_path, plot=False)
    assert not (tmp_path / "temperature_sweep.png").exists()
    _write(tmp_path / "d2", [_record("x", "probe", None, 0.2, 10), _record("y", None, 0.4, 0.3, 10)])
    md = make_report(tmp_path, decode_dir=tmp_path / "d2")["markdown"]
    assert "No teacher, ensemble or student records." in md
    assert "| x (probe) | dnn / teacher | 10 | n/a | n/a | 20.00 (120/20/60) |" in md and "| y |" in md


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
    assert "## Table 1" in out and "| 54.00 |" in out
    assert not (exp_dir / "temperature_sweep.png").exists()
    (exp_dir / "decode" / "result-ensemble.json").write_text("[]")
    assert main(["report", str(exp_dir)]) == 1
    assert "result-ensemble.json" in capsys.readouterr().err


def test_duplicate_roles_warn_and_duplicate_names_fail(tmp_path, caplog):
    records = _standard_records() + [_record("student-kd2", "student_kd", 0.53, 0.1, 10, temperature=3.0)]
    _write(tmp_path / "decode", records)
    results = make_report(tmp_path, plot=False)
    assert "2 records with role 'student_kd'; the tables use 'student-kd'" in caplog.text
    assert results["gain_recovered"]["frame_acc"] == pytest.approx(0.8)
    assert [p["temperature"] for p in results["temperature_sweep"]] == [1.0, 2.0, 3.0, 5.0]
    (tmp_path / "decode" / "result-copy.json").write_text(json.dumps(records[0]))
    with pytest.raises(ValueError, match=r"result-teacher-0\.json: field `name` 'teacher-0' is also the name in"):
        load_records(tmp_path / "decode")


def test_ensemble_members_are_summarised() -> None:
    from asr_kd.decode.tables import _arch

    assert _arch({"arch": ["tdnn"] * 3, "size": ["teacher"] * 3}) == "3 x tdnn / teacher"
    assert _arch({"arch": ["dnn", "tdnn"], "size": ["teacher", "teacher"]}) == "dnn / teacher + tdnn / teacher"
    assert _arch({"arch": "tdnn", "size": "student"}) == "tdnn / student"
