"""Run a command as the terminal's foreground process group (`make run` starts honcho so).

A Ctrl-C goes to every process of the terminal's foreground group. Under `make run` that
group holds make too, and make answers a Ctrl-C with "*** [run] Interrupt" and an error
exit, however well the command it ran stopped. Here the command gets a process group of its
own and the terminal while it runs: the Ctrl-C reaches only the command (honcho, which stops
its processes in order and exits with 130), and a stop by Ctrl-C ends with exit status 0.

Without a terminal, or when started in the background, the command runs as it is.

    python -m otrsbridge.foreground COMMAND [ARG]…
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# How honcho (and a shell) end after a Ctrl-C: 128 + SIGINT, or killed by SIGINT.
STOPPED_BY_CTRL_C = {128 + signal.SIGINT, -signal.SIGINT}


def _terminal() -> int | None:
    """The controlling terminal when this process is its foreground group; else None."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():
            return tty
    except OSError:
        pass
    os.close(tty)
    return None


def run(argv: list[str]) -> int:
    # This process only waits: a Ctrl-C is the command's to answer. (A handler that does
    # nothing, not SIG_IGN, which the command would inherit and then ignore Ctrl-C too.)
    signal.signal(signal.SIGINT, lambda *_: None)
    tty = _terminal()
    if tty is None:
        code = subprocess.call(argv)
    else:
        # Handing the terminal back and forth from here must not stop this process.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        child = subprocess.Popen(argv, process_group=0)
        try:
            os.tcsetpgrp(tty, child.pid)
            code = child.wait()
        finally:
            os.tcsetpgrp(tty, os.getpgrp())
            os.close(tty)
    return 0 if code in STOPPED_BY_CTRL_C else code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m otrsbridge.foreground COMMAND [ARG]…")
    sys.exit(run(sys.argv[1:]))
