"""`manage.py notification_templates [--markdown | --readme]`: the notification emails, who
receives each, and the variables their templates see.

The list is tickets/services/notifications.py's declaration; `--readme` rewrites README.md's
block between the markers below, which a test compares with the declaration.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from connections.management.commands import template_variables
from tickets.services import notifications

START = "<!-- notifications:start (generated: manage.py notification_templates --readme) -->\n"
END = "<!-- notifications:end -->"


def with_table(readme: str) -> str:
    """README's text with the notifications' block replaced by the current tables."""
    return template_variables.with_table(readme, START, END, notifications.markdown_table())


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
            path = template_variables.rewrite_readme(START, END, notifications.markdown_table())
            self.stdout.write(f"Wrote the notifications into {path}")
        elif options["markdown"]:
            self.stdout.write(notifications.markdown_table(), ending="")
        else:
            for kind in notifications.KINDS.values():
                self.stdout.write(f"{kind.name}: {kind.when} → {kind.recipients}")
                self.stdout.write(f"    {', '.join(notifications.variable_names(kind.name))}")
