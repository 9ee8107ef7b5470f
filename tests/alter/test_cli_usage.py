"""Usage errors are one line with exit code 2, and help screens read as a person reads them."""

import pytest

from alter_cli.entry import main


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train-stage1"], "Missing argument 'CONFIG'"),
        (["eval", "--bogus"], "No such option: --bogus"),
        (["predict", "ckpt", "--task"], "'--task' requires an argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_error_is_one_line_exit_2(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alter: error: ") and needle in err


@pytest.mark.parametrize("command", ["train-stage1", "train-stage2", "eval"])
def test_help_screen_has_no_type_noise(command, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "KEY=VALUE" in out and "<bool>" not in out and "list[str]" not in out


def test_an_interrupt_re_raised_by_a_lazy_import_counts_as_an_interrupt():
    """transformers' lazy imports turn a Ctrl-C inside an import into ModuleNotFoundError "from" the
    KeyboardInterrupt; the entry point must still answer "alter: interrupted" (exit 130)."""
    from alter_cli.entry import caused_by_interrupt

    def chained(outer: BaseException, inner: BaseException, implicit: bool = False) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as e:
                if implicit:
                    raise outer  # noqa: B904 - the implicit __context__ is what is tested
                raise outer from e
        except BaseException as got:
            return got

    assert caused_by_interrupt(chained(ModuleNotFoundError("GenerationMixin"), KeyboardInterrupt()))
    assert caused_by_interrupt(chained(RuntimeError("x"), KeyboardInterrupt(), implicit=True))
    assert caused_by_interrupt(KeyboardInterrupt())
    assert not caused_by_interrupt(chained(ModuleNotFoundError("peft"), ImportError("no peft")))
    loop = ValueError("loop")
    loop.__cause__ = loop  # a cyclic chain ends
    assert not caused_by_interrupt(loop)
