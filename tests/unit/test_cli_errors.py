"""What a person sees when a command fails: one line of at most about 300 characters, no data."""

from __future__ import annotations

import argparse

import pytest

from core import cli
from core.errors import StoreError


def test_one_line_elides_vectors_and_caps_the_length() -> None:
    vector = ", ".join(f"{0.01 * i:.6f}" for i in range(512))
    one = cli.one_line(f"Code: 36. bad query\nSELECT distance(vector, [{vector}]) FROM images")
    assert "\n" not in one and "0.500000" not in one and len(one) <= cli.ERROR_CHARS
    assert cli.one_line("x" * 5000).endswith("…") and len(cli.one_line("x" * 5000)) == cli.ERROR_CHARS


def _failing(error: BaseException) -> object:
    def command(args: argparse.Namespace, settings: object) -> int:
        raise error

    return command


@pytest.mark.parametrize(
    "error",
    [
        StoreError("DB::Exception: " + ", ".join(["0.125"] * 600) + " " + "y" * 20_000),
        RuntimeError("something nobody expected\n  with a second line"),
    ],
)
def test_any_failure_is_one_line_and_the_detail_goes_to_the_verbose_log(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "info", _failing(error))
    assert cli.main(["info"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vdx: error:") and len(err) <= cli.ERROR_CHARS + 20
    assert "0.125, 0.125" not in err and "Traceback" not in err
