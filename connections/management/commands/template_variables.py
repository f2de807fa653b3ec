"""`manage.py template_variables [--markdown | --readme]`: the variables a CreateTicketJSON may use.

The list is connections/context.py's declaration; `--readme` rewrites README.md's block
between the markers below, which a test compares with the declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import context

START = "<!-- variables:start (generated: manage.py template_variables --readme) -->\n"
END = "<!-- variables:end -->"


def readme_path() -> Path:
    return Path(settings.BASE_DIR) / "README.md"


def with_table(readme: str, start: str = START, end: str = END, table: str | None = None) -> str:
    """README's text with the block between the markers `start` and `end` replaced by
    `table` (by default the current table of the variables)."""
    head, found_start, rest = readme.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise CommandError(f"README.md has no block between {start.strip()} and {end}")
    table = context.markdown_table() if table is None else table
    return f"{head}{start}\n{table}\n{end}{tail}"


def rewrite_readme(start: str, end: str, table: str) -> Path:
    """Replace README.md's block between `start` and `end` with `table`, in place."""
    path = readme_path()
    path.write_text(
        with_table(path.read_text(encoding="utf-8"), start, end, table), encoding="utf-8"
    )
    return path


class Command(BaseCommand):
    help = "List the variables a CreateTicketJSON may use (the one declaration, context.py)."

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--markdown", action="store_true", help="Print the README's table.")
        what.add_argument(
            "--readme", action="store_true", help="Rewrite the table in README.md in place."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["readme"]:
            path = rewrite_readme(START, END, context.markdown_table())
            self.stdout.write(f"Wrote the variables into {path}")
        elif options["markdown"]:
            self.stdout.write(context.markdown_table(), ending="")
        else:
            width = max(len(v.name) for v in context.VARIABLES) + 3
            for variable in context.VARIABLES:
                self.stdout.write(f"{'${' + variable.name + '}':<{width}} {variable.meaning}")
            for root, meaning in context.OPEN_NAMESPACES.items():
                self.stdout.write(f"{'${' + root + '.<key>}':<{width}} {meaning}")
