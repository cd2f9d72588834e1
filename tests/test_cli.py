import pytest

from asr_kd.cli import COMMANDS, ORDER, build_parser, main


def test_every_command_is_listed_and_has_help(capsys):
    assert set(ORDER) == set(COMMANDS)
    for name in ORDER:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: asr-kd" in capsys.readouterr().out


def test_user_errors_exit_1_with_the_file_named(tmp_path, capsys):
    code = main(["features", "--manifest-dir", str(tmp_path), "--corpus", "nosuch", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "ERROR" in err and "nosuch_recordings_" in err and str(tmp_path) in err


def test_train_and_distill_pass_the_skip_threshold(tmp_path, monkeypatch):
    import asr_kd.kd.distill
    import asr_kd.trainer
    from asr_kd.data.lang import prepare_lang

    (tmp_path / "lexicon.txt").write_text("yes y eh s\nno n ow\n", encoding="utf-8")
    lang = prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang")
    seen = {}
    monkeypatch.setattr(asr_kd.trainer, "train", lambda cfg, **kw: seen.setdefault("train", cfg))
    monkeypatch.setattr(asr_kd.kd.distill, "distill", lambda cfg, **kw: seen.setdefault("distill", cfg))
    common = ["--exp-dir", str(tmp_path / "exp"), "--lang-dir", str(tmp_path / "lang"), "--train-cuts", "t.jsonl.gz",
              "--valid-cuts", "v.jsonl.gz"]  # fmt: skip
    assert main(["train", *common, "--max-skipped-share", "0.2"]) == 0
    assert main(["distill", *common, "--alpha", "0"]) == 0
    assert seen["train"].max_skipped_share == 0.2 and seen["train"].model.num_pdfs == lang.num_pdfs
    assert seen["distill"].max_skipped_share == 0.05  # the other stages' default
