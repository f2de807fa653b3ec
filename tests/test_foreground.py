"""One Ctrl-C at a terminal stops `make run` without make reporting an interrupt.

make and the command it runs share the terminal's foreground process group, so a Ctrl-C
reaches make too, which then reports "*** [run] Interrupt" (or "Error 130") and fails. otrsbridge.foreground
hands the terminal to the command alone. Both are checked on a real pseudo-terminal, with a
real make, and a command that ends with 130 on SIGINT as honcho does.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Stands in for honcho: says it is up, and answers SIGINT by exiting with 130.
COMMAND = "sh -c 'trap \"echo stopping; exit 130\" INT; echo up; while :; do sleep 0.1; done'"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _ctrl_c_under_make(tmp_path: Path, recipe: str) -> tuple[int, str]:
    """Run `make run` with `recipe` on a new pseudo-terminal, press Ctrl-C once it is up;
    make's exit status and everything the terminal showed."""
    (tmp_path / "Makefile").write_text(f"run:\n\t{recipe}\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: make, with the pseudo-terminal as its controlling terminal
        os.chdir(tmp_path)
        os.environ["PYTHONPATH"] = str(ROOT)
        for name in (
            "MAKELEVEL",
            "MAKEFLAGS",
            "MFLAGS",
        ):  # a make of its own, even under `make test`
            os.environ.pop(name, None)
        # As at a terminal: a run started in the background (nohup, `cmd &` in a script)
        # inherits SIGINT ignored, and make and sh keep an ignored signal ignored.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvp("make", ["make", "--no-print-directory", "run"])
    shown, deadline, pressed = b"", time.monotonic() + 20, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: make ended
                break
            if not chunk:
                break
            shown += chunk
        if not pressed and b"up" in shown:
            time.sleep(0.3)  # the terminal has been handed over by now
            os.write(fd, b"\x03")
            pressed = True
    waited = time.monotonic() + 5  # the terminal closes a moment before make is reaped
    while not (ended_status := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < waited:
        time.sleep(0.05)
    ended, status = ended_status
    if not ended:  # still running after the deadline: stop it, and say what was shown
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        pytest.fail(
            f"make run had not ended 5 s after the wait (Ctrl-C pressed: {pressed}); "
            f"the terminal showed {shown!r}"
        )
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_a_ctrl_c_stops_the_command_and_make_ends_without_an_error(tmp_path):
    code, shown = _ctrl_c_under_make(
        tmp_path, f"{sys.executable} -m otrsbridge.foreground {COMMAND}"
    )
    assert "stopping" in shown  # the command got the Ctrl-C
    assert "***" not in shown and "Traceback" not in shown, shown  # make reports nothing
    assert code == 0


def test_without_it_make_reports_the_ctrl_c_as_an_interrupt(tmp_path):
    """The control: the same command run by make directly."""
    code, shown = _ctrl_c_under_make(tmp_path, COMMAND)
    assert "stopping" in shown
    assert "***" in shown and code != 0  # "Interrupt" or "Error 130"
