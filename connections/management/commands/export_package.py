"""`manage.py export_package NAME… [-o FILE]`: a connection package without secrets."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.package_format import PackageError
from connections.packages import export_package


class Command(BaseCommand):
    help = (
        "Export connections or security systems (with their endpoints) as a package. Secrets are "
        "replaced by @NAME@ secret variables; their values are never written."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "names", nargs="+", metavar="NAME", help="connection or security system name"
        )
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="write here instead of to standard output"
        )

    def handle(self, *args, **options) -> None:
        try:
            package = export_package(options["names"])
        except PackageError as exc:
            raise CommandError("\n".join(exc.errors)) from exc
        text = json.dumps(package, indent=2, ensure_ascii=False) + "\n"
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {options['output']}")
        else:
            self.stdout.write(text, ending="")
