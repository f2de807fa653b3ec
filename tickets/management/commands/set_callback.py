"""`manage.py set_callback NAME URL` / `manage.py set_callback NAME --clear`: where the bridge
POSTs an API client's request documents when their status changes.

A new signing secret is made each time and printed once, alone on the last line; only its
encryption is stored.
"""

from django.core.management.base import BaseCommand, CommandError

from tickets import services
from tickets.models import ApiClient


class Command(BaseCommand):
    help = "Set an API client's callback URL and print its new signing secret (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The API client's name.")
        parser.add_argument("url", nargs="?", default="", help="The http(s) URL to POST to.")
        parser.add_argument("--clear", action="store_true", help="Stop the callbacks.")

    def handle(self, *args, name: str, url: str, clear: bool, **options):
        client = ApiClient.objects.filter(name=name).first()
        if client is None:
            raise CommandError(f"There is no API client named {name!r}.")
        if clear:
            services.client_clear_callback(client=client)
            self.stdout.write(f"{client.name} gets no callbacks any more.")
            return
        try:
            secret = services.client_set_callback(client=client, url=url)
        except services.RequestInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{client.name} gets callbacks at {client.callback_url}.")
        self.stdout.write("Its signing secret follows; store it now, it is not shown again:")
        self.stdout.write(secret)
