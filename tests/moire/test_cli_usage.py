"""Usage errors are one line with exit code 2, and help screens read as a person reads them."""

import pytest

from moire_cli.cli import main


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["phonons"], "Missing argument 'CONFIG'"),
        (["phonons", "x.yaml", "--bogus"], "No such option: --bogus"),
        (["melt", "x.yaml", "--out"], "'--out' requires an argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_error_is_one_line_exit_2(argv, needle, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moire: error: ") and needle in err


@pytest.mark.parametrize("command", ["phonons", "melt"])
def test_help_screen_has_no_type_noise(command, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "KEY=VALUE" in out and "<bool>" not in out and "list[str]" not in out
