"""Helpers shared by the end-to-end CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from genos_cli.cli.app import app

runner = CliRunner()


def genos(*args: str) -> Result:
    """Run `genos ARGS...` in-process, as a user would type it."""
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result: Result, *needles: str) -> str:
    """A clean failure: exit 1, a red `error:` sentence on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr
