"""distill/isolated.py: native code (NNCF's quantisation) runs in a fresh process, where a crash is retried once and
then is one error line, never the end of the run."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from distill.errors import UserError
from distill.isolated import call_isolated


def pid_and_sum(a: int, b: int) -> tuple[int, int]:
    return os.getpid(), a + b


def refuse(message: str):
    raise UserError(message)


def crash(marker: Path | None = None) -> str:
    """Dies of a segfault, as native code does; with a marker, only the first time (the marker remembers it)."""
    if marker is not None and marker.exists():
        return "answered"
    if marker is not None:
        marker.touch()
    os.kill(os.getpid(), signal.SIGSEGV)
    return "never"


def test_the_call_runs_in_another_process_and_answers_here():
    pid, total = call_isolated(pid_and_sum, 2, 3, what="adding", fix="none needed")
    assert total == 5 and pid != os.getpid()


def test_an_error_raised_there_is_raised_here_unchanged():
    with pytest.raises(UserError, match="^give more data$"):
        call_isolated(refuse, "give more data", what="refusing", fix="none needed")


def test_a_crash_is_retried_in_a_fresh_process(tmp_path, capsys):
    assert call_isolated(crash, tmp_path / "crashed-once", what="the flaky step", fix="f") == "answered"
    assert "warning: the flaky step crashed its process (native code); trying again" in capsys.readouterr().err


def test_a_crash_every_time_is_one_error_line_naming_the_fix():
    with pytest.raises(UserError) as raised:
        call_isolated(crash, what="NNCF quantising model.xml", fix="skip the backend")
    message = str(raised.value)
    assert message.startswith("NNCF quantising model.xml crashed its process 2 times")
    assert message.endswith("skip the backend") and "\n" not in message
