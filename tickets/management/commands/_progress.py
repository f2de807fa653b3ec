"""Progress output for the one-cycle commands: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time


class Progress:
    def __init__(self, stdout, label: str, total: int | None = None):
        self.out = stdout
        self.label = label
        self.total = total
        self.done = 0
        self.tty = bool(getattr(stdout, "isatty", lambda: False)())
        self.started = time.monotonic()

    def step(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.tty:
            if self.total:
                width = 30
                filled = int(width * min(self.done, self.total) / self.total)
                bar = "#" * filled + "-" * (width - filled)
                self.out.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            else:
                self.out.write(f"\r{self.label}: {self.done}")
            self.out.flush()
        else:
            self.out.write(
                f"{self.label}: {self.done}{'/' + str(self.total) if self.total else ''} {note}".rstrip()
            )

    def finish(self, summary: str) -> None:
        if self.tty:
            self.out.write("\n")
        elapsed = time.monotonic() - self.started
        self.out.write(f"{summary} ({elapsed:.1f} s)")
