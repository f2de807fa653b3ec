"""`manage.py test_connection NAME`: log in, run the test call, print the verdict and the exchange."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.models import Connection
from connections.services import connection_check


class Command(BaseCommand):
    help = "Log in to a connection's ticket system and run its test call; exit 1 on failure."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The connection's name.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            connection = Connection.objects.get(name=options["name"])
        except Connection.DoesNotExist:
            raise CommandError(f"No connection named {options['name']!r}.") from None
        result = connection_check(connection=connection)
        verdict = f"OK: {result.message}" if result.ok else f"FAILED: {result.message}"
        self.stdout.write(self.style.SUCCESS(verdict) if result.ok else self.style.ERROR(verdict))
        for exchange in result.exchanges:
            status = exchange["status_code"] or exchange["outcome"]
            line = f"  {exchange['method']} {exchange['url']} -> {status} in {exchange['duration_ms']} ms"
            self.stdout.write(line + (f": {exchange['error']}" if exchange["error"] else ""))
        if not result.ok:
            raise SystemExit(1)
