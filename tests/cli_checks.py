"""The in-process CLI and its one-line error check, shared by the reliability tests."""

from __future__ import annotations

from typer.testing import CliRunner

from resnet_deploy.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


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
