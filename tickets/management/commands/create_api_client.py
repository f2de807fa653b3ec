"""`manage.py create_api_client NAME [--trusted] [--scim-endpoint ENDPOINT]…`: a client for
the JSON API and its token. With `--scim-endpoint` it is also a SCIM client of those
endpoints (/scim/v2/<endpoint>/), and trusted: a SCIM client's approval happened upstream.

The token is printed once, alone on the last line, so a script can take it with `tail -1`;
only its hash is stored.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction

from connections.models import Endpoint
from tickets.api import api_client_create
from tickets.models import ApiClient


class Command(BaseCommand):
    help = "Create an API client and print its bearer token (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A short unique name (letters, digits, - and _).")
        parser.add_argument(
            "--trusted",
            action="store_true",
            help="Approval happens upstream: this client's requests arrive approved.",
        )
        parser.add_argument(
            "--scim-endpoint",
            action="append",
            default=[],
            dest="scim_endpoints",
            metavar="ENDPOINT",
            help="An endpoint this client may provision over SCIM (repeat for more); "
            "implies --trusted.",
        )

    def handle(self, *args, name: str, trusted: bool, scim_endpoints: list[str], **options):
        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(
                f"{name!r} is not a valid client name; use letters, digits, - and _."
            ) from None
        limit = ApiClient._meta.get_field("name").max_length
        assert limit is not None  # a CharField always has one
        if len(name) > limit:
            raise CommandError(f"{name!r} is longer than {limit} characters.")
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(
                f"An API client named {name!r} already exists; choose another name "
                "(a lost token cannot be shown again)."
            )
        endpoints = list(Endpoint.objects.filter(name__in=scim_endpoints))
        unknown = sorted(set(scim_endpoints) - {e.name for e in endpoints})
        if unknown:
            raise CommandError(f"There is no endpoint named {', '.join(map(repr, unknown))}.")
        with transaction.atomic():
            client, token = api_client_create(name=name, trusted=trusted or bool(endpoints))
            client.scim_endpoints.set(endpoints)
        kind = "trusted (requests arrive approved)" if client.trusted else "untrusted"
        self.stdout.write(f"Created API client {client.name}, {kind}.")
        for endpoint in endpoints:
            self.stdout.write(f"SCIM service of {endpoint}: /scim/v2/{endpoint.name}")
        self.stdout.write("Its token follows; store it now, it is not shown again:")
        self.stdout.write(token)
