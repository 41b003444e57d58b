"""The in-process CLI, a run that must exit with a given code, and the one-line error check, shared by the tests."""

from __future__ import annotations

from typer.testing import CliRunner

from resnet_deploy.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def run(*args, code: int = 0):
    """The command, which must exit ``code``."""
    r = invoke(*args)
    assert r.exit_code == code, r.output
    return r


def one_line(r, code: int, *words: str) -> str:
    """The command exited ``code`` with exactly one ``error`` line, its last (progress lines may come before it),
    holding every one of ``words``, and no traceback."""
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]
