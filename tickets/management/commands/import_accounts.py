"""`manage.py import_accounts ENDPOINT FILE.csv [--dry-run] [--partial]`: load accounts that
existed before the bridge into its inventory (services.accounts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.models import Endpoint
from tickets import limits
from tickets.services import accounts


class Command(BaseCommand):
    help = (
        "Import the accounts of one endpoint from a CSV file (columns: "
        + ", ".join(accounts.COLUMNS)
        + "). Nothing is written when a row is wrong, unless --partial."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("endpoint", help="The endpoint's name (e.g. crm).")
        parser.add_argument("file", help="The CSV file, UTF-8, with a header line.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and report; write nothing."
        )
        parser.add_argument(
            "--partial",
            action="store_true",
            help="Write the good rows even when others are wrong (they are listed).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = Endpoint.objects.filter(name=options["endpoint"]).first()
        if endpoint is None:
            raise CommandError(f"There is no endpoint named {options['endpoint']!r}.")
        path = Path(options["file"])
        try:
            with path.open("rb") as handle:
                data = handle.read(limits.IMPORT_MAX_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"{path} cannot be read: {exc.strerror or exc}.") from None
        try:
            rows = accounts.parse_csv(data)
        except accounts.ImportFileError as exc:
            raise CommandError(f"{path.name}: {exc}") from None
        report = accounts.import_rows(
            endpoint=endpoint,
            rows=rows,
            actor="command:import_accounts",
            partial=options["partial"],
            dry_run=options["dry_run"],
        )
        for problem in report.problems:
            self.stderr.write(f"{path.name} {problem}")
        self.stdout.write(str(report))
        if report.problems and not report.written:
            raise CommandError(
                f"{len(report.problems)} row(s) are wrong; nothing was written "
                "(fix them, or import the good rows with --partial)."
            )
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
