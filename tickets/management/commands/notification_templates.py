"""`manage.py notification_templates [--markdown | --readme]`: the notification emails, who
receives each, and the variables their templates see.

The list is tickets/services/notifications.py's declaration; `--readme` rewrites README.md's
block between the markers below, which a test compares with the declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tickets.services import notifications

START = "<!-- notifications:start (generated: manage.py notification_templates --readme) -->\n"
END = "<!-- notifications:end -->"


def with_table(readme: str) -> str:
    """README's text with the block between the markers replaced by the current tables."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise CommandError(f"README.md has no block between {START.strip()} and {END}")
    return f"{head}{START}\n{notifications.markdown_table()}\n{END}{tail}"


class Command(BaseCommand):
    help = "List the notification emails and their template variables (notifications.py)."

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--markdown", action="store_true", help="Print the README's tables.")
        what.add_argument(
            "--readme", action="store_true", help="Rewrite the tables in README.md in place."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["readme"]:
            path = Path(settings.BASE_DIR) / "README.md"
            path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
            self.stdout.write(f"Wrote the notifications into {path}")
        elif options["markdown"]:
            self.stdout.write(notifications.markdown_table(), ending="")
        else:
            for kind in notifications.KINDS.values():
                self.stdout.write(f"{kind.name}: {kind.when} → {kind.recipients}")
                self.stdout.write(f"    {', '.join(notifications.variable_names(kind.name))}")
