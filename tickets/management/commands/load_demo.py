"""`manage.py load_demo`: demo data for `make run` (idempotent; refused unless DEBUG is on).

Imports the shipped OTRS package pointed at the local simulator, adds two applications
(ERP owned by bob, so only he and the admins decide its requests), a few people with roles,
an account on ERP that existed before the bridge (imported, as from a CSV), and some
requests in different states of approval.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connections.models import Connection, Endpoint, SecuritySystem
from connections.packages import apply_import, load_package, plan_import
from tickets import jobs, services
from tickets.models import AccessRequest, Account, Identity

PACKAGE = Path(settings.BASE_DIR) / "packages" / "otrs-genericticketconnector.json"
SIM_BASE = os.environ.get(
    "DEMO_OTRS_URL",
    "http://127.0.0.1:8089/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST",
)
DEMO_PASSWORD = "demo-password-1"
CONNECTION = "otrs-demo"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret"
PEOPLE = [
    ("admin", "Avery", "Admin", ["admins", "operators", "approvers", "requesters"], True),
    ("alice", "Alice", "Archer", ["requesters"], False),
    ("bob", "Bob", "Baker", ["approvers", "requesters"], False),
    ("olga", "Olga", "Ivanova", ["operators", "requesters"], False),
]
IDENTITIES = [
    ("ada.lovelace", "Ada", "Lovelace"),
    ("alan.turing", "Alan", "Turing"),
    ("grace.hopper", "Grace", "Hopper"),
    ("edsger.dijkstra", "Edsger", "Dijkstra"),
]


class Command(BaseCommand):
    help = "Load demo data for the local simulator (DEBUG only; safe to run again)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("load_demo creates demo logins and runs only with DEBUG=True.")
        with transaction.atomic():
            connection = self._connection()
            self._applications(connection)
            self._people()
            self._governance()
            created = self._requests()
        jobs.schedules_sync()
        self.stdout.write(f"Demo data ready ({created} new request(s)).")
        self.stdout.write(
            f"  Console login: admin / {DEMO_PASSWORD}  (also alice, bob, olga with the same password)"
        )
        self.stdout.write(
            f"  OTRS simulator agent: bridge / bridge-demo-password; webhook token: {DEMO_WEBHOOK_SECRET}"
        )

    def _connection(self) -> Connection:
        package = load_package(PACKAGE.read_bytes(), PACKAGE.name)
        values = {
            "CONNECTION": CONNECTION,
            "BASEURL": SIM_BASE,
            "USERNAME": "bridge",
            "PASSWORD": "bridge-demo-password",
        }
        apply_import(plan_import(package, values))
        connection = Connection.objects.get(name=CONNECTION)
        if not connection.webhook_secret:
            connection.set_webhook_secret(DEMO_WEBHOOK_SECRET)
            connection.save(update_fields=["webhook_secret_encrypted"])
        return connection

    def _applications(self, connection: Connection) -> None:
        apps = [
            ("crm", "Sales CRM", True, ["crm-read", "crm-write", "crm-admin"], "Raw"),
            (
                "erp",
                "Finance ERP",
                False,
                ["ledger-view", "ledger-post", "payments-approve"],
                "Misc",
            ),
        ]
        for name, label, instant, entitlements, queue in apps:
            system, _ = SecuritySystem.objects.update_or_create(
                name=f"{name}-system",
                defaults={
                    "display_name": label,
                    "instant_provisioning": instant,
                    "provisioning_tries": 5,
                    "service_desk_connection": connection,
                },
            )
            Endpoint.objects.update_or_create(
                name=name,
                defaults={
                    "security_system": system,
                    "display_name": label,
                    "attributes": {"queue": queue},
                    "entitlements": entitlements,
                },
            )

    def _people(self) -> None:
        for username, first, last, roles, superuser in PEOPLE:
            person, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@example.com", "is_staff": superuser},
            )
            if (person.first_name, person.last_name) != (first, last):  # demo data of before
                person.first_name, person.last_name = first, last
                person.save(update_fields=["first_name", "last_name"])
            if created:
                person.set_password(DEMO_PASSWORD)
                person.is_superuser = superuser
                person.save()
            person.groups.add(*Group.objects.filter(name__in=roles))
        for username, first, last in IDENTITIES:
            Identity.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@example.com",
                },
            )

    def _governance(self) -> None:
        """ERP's owner, and an account on it that the bridge did not create (once: an account
        the demo has since removed is not imported again)."""
        erp = Endpoint.objects.select_related("security_system").get(name="erp")
        erp.security_system.owners.set([User.objects.get(username="bob")])
        if Account.objects.filter(endpoint=erp, identity__username="edsger.dijkstra").exists():
            return
        report = services.accounts.import_rows(
            endpoint=erp,
            rows=[
                {
                    "username": "edsger.dijkstra",
                    "email": "edsger.dijkstra@example.com",
                    "first_name": "Edsger",
                    "last_name": "Dijkstra",
                    "account_name": "edijkstra",
                    "entitlements": "ledger-view;ledger-post",
                }
            ],
            actor="load_demo",
        )
        if report.problems:
            raise CommandError(f"The demo's account import failed: {report.problems[0]}")

    def _requests(self) -> int:
        if AccessRequest.objects.exists():
            return 0
        alice = User.objects.get(username="alice")
        bob = User.objects.get(username="bob")
        made = [
            services.request_submit(
                beneficiary=Identity.objects.get(username="ada.lovelace"),
                endpoint="crm",
                operation="create_account",
                requester=alice,
                entitlements=["crm-read"],
                justification="Joins the sales team on Monday.",
            ),
            services.request_submit(
                beneficiary=Identity.objects.get(username="alan.turing"),
                endpoint="erp",
                operation="create_account",
                requester=alice,
                justification="Quarter-end reporting.",
            ),
            services.request_submit(
                beneficiary=Identity.objects.get(username="grace.hopper"),
                endpoint="crm",
                operation="create_account",
                requester=alice,
                entitlements=["crm-read", "crm-write"],
                justification="Account manager for the northern region.",
            ),
        ]
        # Two approved (their tickets are created by the workers), one left in the inbox.
        for access_request in made[:2]:
            services.request_approve(
                access_request=access_request, by=bob, comment="OK for the demo"
            )
        return len(made)
