"""`manage.py set_webhook_secret NAME [--generate | --clear]`: the secret that OTRS must send
with every webhook call of connection NAME (docs/webhook.md says where it goes in Znuny).

With --generate the secret is made here and printed once, alone on the last line. Without
it the secret is read from standard input (a prompt on a terminal), so it never shows up
in the shell history or the process list. It is stored encrypted.
"""

import getpass
import re
import secrets
import sys

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection

MIN_LENGTH = 16
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


class Command(BaseCommand):
    help = "Set, generate or clear the webhook secret of a connection."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The connection's name.")
        how = parser.add_mutually_exclusive_group()
        how.add_argument("--generate", action="store_true", help="Generate and print a secret.")
        how.add_argument(
            "--clear", action="store_true", help="Remove the secret: all webhooks are refused."
        )

    def handle(self, *args, name: str, generate: bool, clear: bool, **options):
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            known = ", ".join(Connection.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"There is no connection named {name!r} (known: {known}).")
        if clear:
            secret = ""
        elif generate:
            secret = secrets.token_urlsafe(32)
        else:
            secret = self._read_secret()
        connection.set_webhook_secret(secret)
        connection.save(update_fields=["webhook_secret_encrypted", "updated_at"])
        if clear:
            self.stdout.write(f"Webhook secret of {name} removed; its webhooks are now refused.")
        elif generate:
            self.stdout.write(f"Webhook secret of {name} set. Put it in the Znuny invoker now;")
            self.stdout.write("it is not shown again:")
            self.stdout.write(secret)
        else:
            self.stdout.write(f"Webhook secret of {name} set.")

    def _read_secret(self) -> str:
        if sys.stdin.isatty():
            secret = getpass.getpass("Webhook secret: ")
        else:
            secret = sys.stdin.readline().strip()
        if len(secret) < MIN_LENGTH:
            raise CommandError(
                f"The secret must have at least {MIN_LENGTH} characters; or use --generate."
            )
        if not URL_SAFE.fullmatch(secret):
            raise CommandError(
                "Use only letters, digits and - _ . ~ in the secret: it travels in an HTTP "
                "header or a URL query."
            )
        return secret
