"""`manage.py rotate_keys`: re-encrypt every stored secret with the first FIELD_ENCRYPTION_KEY.

Rotation: put the new key first in FIELD_ENCRYPTION_KEY and keep the old one after it,
run this command, then drop the old key.
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from connections import crypto
from connections.models import Connection, ConnectionToken


class Command(BaseCommand):
    help = "Re-encrypt connection secrets, webhook secrets and tokens with the first key."

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            for connection in Connection.objects.select_for_update():
                Connection.objects.filter(pk=connection.pk).update(
                    secrets_encrypted=crypto.reencrypt(connection.secrets_encrypted),
                    webhook_secret_encrypted=crypto.reencrypt(connection.webhook_secret_encrypted),
                )
                count += 1
            for token in ConnectionToken.objects.select_for_update():
                ConnectionToken.objects.filter(pk=token.pk).update(
                    token_encrypted=crypto.reencrypt(token.token_encrypted)
                )
                count += 1
        self.stdout.write(f"re-encrypted the secrets of {count} row(s) with the first key")
