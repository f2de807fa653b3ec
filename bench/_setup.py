"""Django set-up shared by the benchmarks: a throwaway database, migrated, per run.

BENCH_DATABASE_URL points the benchmarks at another database (e.g. PostgreSQL);
by default each run gets a fresh SQLite file under var/bench/.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ready = False


def setup_django() -> None:
    global _ready
    if _ready:
        return
    root = Path(__file__).resolve().parent.parent
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        folder = root / "var" / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="bench-", suffix=".sqlite3", dir=folder)
        os.close(fd)
        url = f"sqlite:///{path}"
    os.environ["DATABASE_URL"] = url
    os.environ.pop("TEST_DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "otrsbridge.test_settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    _ready = True
