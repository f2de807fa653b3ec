"""`manage.py worker` (the Procfile's worker) stops cleanly when its supervisor stops it.

honcho stops a process by sending SIGTERM to its whole process group and SIGKILL 5 s
later. The worker must be gone before that, with exit status 0, its cluster stopped in
order; that is what makes one Ctrl-C of `make run` end everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRACE = 5.0  # honcho's KILL_WAIT

pytestmark = pytest.mark.slow


def test_a_group_sigterm_stops_the_worker_within_the_grace_period(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "True",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "otrsbridge.settings",
    }
    for name in ("REDIS_URL", "TEST_DATABASE_URL"):
        env.pop(name, None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    worker = subprocess.Popen(
        [*manage, "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as honcho starts it
    )
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        for line in worker.stdout:
            lines.append(line)
            if "running." in line:
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(60), "".join(lines)
        started = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)  # what honcho does on Ctrl-C
        code = worker.wait(timeout=GRACE)
        took = time.monotonic() - started
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    reader.join(timeout=5)
    output = "".join(lines)
    assert code == 0, output
    assert took < GRACE and "has stopped." in output, (took, output)
