"""`manage.py worker`: the django-q2 cluster (`qcluster`), stoppable by a supervisor.

A supervisor such as honcho stops a process by signalling its whole process group
(SIGTERM, then SIGKILL after a grace period of 5 s). qcluster's sentinel and worker
processes share its group: the signal kills them at once, and the cluster then waits for
them until the SIGKILL comes. Here qcluster runs in a group of its own and a stop signal
reaches only its main process, which stops the sentinel and the workers in order (about
3 s), so one Ctrl-C of `make run` ends it cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the django-q2 cluster; SIGTERM or SIGINT stops it in order."

    def handle(self, *args, **options) -> None:
        cluster = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster"], start_new_session=True
        )
        stopping: list[int] = []

        def stop(signum, frame) -> None:
            if not stopping:
                stopping.append(signum)
                cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        code = cluster.wait()
        if code and not (stopping and code == -signal.SIGTERM):
            sys.exit(code if code > 0 else 128 - code)
