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
