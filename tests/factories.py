"""Builders for test data: people with roles, a connection to the simulator, endpoints,
requests. Real objects through the real services; nothing here patches project code."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import Group, User

from connections.models import Connection, Endpoint, SecuritySystem

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "packages" / "otrs-genericticketconnector.json"
SIM_USER = "bridge"
SIM_PASSWORD = "bridge-demo-password"


def user(
    username: str, *roles: str, password: str = "pw-for-tests-only", superuser: bool = False
) -> User:
    """A console user in the given role groups (requesters, approvers, operators, admins)."""
    person, _ = User.objects.get_or_create(
        username=username,
        defaults={"email": f"{username}@example.com", "is_staff": superuser or "admins" in roles},
    )
    person.set_password(password)
    person.is_superuser = superuser
    person.save()
    ensure_roles()
    for role in roles:
        person.groups.add(Group.objects.get(name=role))
    return User.objects.get(pk=person.pk)  # fresh, so the permission cache is empty


def ensure_roles() -> None:
    """Transactional tests flush the tables, and with them the groups the data migration
    made; make them again with the migration's own code."""
    if Group.objects.filter(name="admins").exists():
        return
    import importlib

    from django.apps import apps

    roles = importlib.import_module("tickets.migrations.0002_roles")
    roles.grant(apps, roles.ROLES)
    later = importlib.import_module("tickets.migrations.0009_admin_role_history_permissions")
    roles.grant(apps, later.ADDED)


def otrs_connection(
    sim,
    *,
    name: str = "otrs-demo",
    batch_size: int = 50,
    user: str = SIM_USER,
    password: str = SIM_PASSWORD,
    key_field: str = "",
) -> Connection:
    """Import the shipped OTRS package pointed at a running simulator (or any server with a
    `base_url`), setting only the URL and the credentials, as an admin would."""
    from connections.packages import apply_import, load_package, plan_import

    package = load_package(PACKAGE.read_bytes(), PACKAGE.name)
    values = {
        "CONNECTION": name,
        "BASEURL": sim.base_url,
        "USERNAME": user,
        "PASSWORD": password,
        "KEYFIELD": key_field,
    }
    apply_import(plan_import(package, values))
    Connection.objects.filter(name=name).update(batch_size=batch_size)
    return Connection.objects.get(name=name)


def endpoint(
    connection: Connection,
    *,
    name: str = "crm",
    instant: bool = False,
    tries: int = 5,
    entitlements: tuple[str, ...] = ("crm-read", "crm-write", "crm-admin"),
    queue: str = "Raw",
) -> Endpoint:
    system, _ = SecuritySystem.objects.update_or_create(
        name=f"{name}-system",
        defaults={
            "display_name": f"{name.upper()} system",
            "instant_provisioning": instant,
            "provisioning_tries": tries,
            "service_desk_connection": connection,
        },
    )
    ep, _ = Endpoint.objects.update_or_create(
        name=name,
        defaults={
            "security_system": system,
            "display_name": name.upper(),
            "attributes": {"queue": queue},
            "entitlements": list(entitlements),
        },
    )
    return ep


def careless_api_call(
    connection: Connection, *, ref: str, base_url: str, secret: str, session_id: str
):
    """A call-log row as an older, careless client might have written it: the secret and the
    session id in clear in its URL, error and excerpts. Pages must mask it anyway."""
    from connections.models import ApiCall

    return ApiCall.objects.create(
        connection=connection,
        ref=ref,
        call_name="Leaky",
        method="POST",
        url=f"{base_url}/Session?Password={secret}",
        outcome="error",
        error=f"login with {secret} refused",
        request_excerpt=f'{{"Password": "{secret}", "SessionID": "{session_id}"}}',
        response_excerpt=f'{{"SessionID": "{session_id}"}}',
    )


def leaky_world(sim, *, secret: str, requester, approver):
    """A connection to `sim` whose password is `secret`, one ticket created through it, a
    connection test passed, and then the secret and the session id left in clear where an
    older, careless client might have left them (a call-log row, the connection's texts)."""
    from types import SimpleNamespace

    from connections.models import ConnectionToken
    from connections.services import connection_check
    from tickets import jobs, services
    from tickets.models import ProvisioningTask

    connection = otrs_connection(sim, password=secret)
    crm = endpoint(connection, name="crm", instant=False)
    access_request = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=crm,
        operation="create_account",
        requester=requester,
    )
    services.request_approve(access_request=access_request, by=approver)
    # One worker, in this thread: the test's open transaction holds SQLite's write lock,
    # which a worker thread would wait for.
    jobs.provision_job(trigger="test", workers=1)
    assert connection_check(connection=connection).ok
    session_id = ConnectionToken.objects.get(connection=connection).token
    assert session_id
    task = ProvisioningTask.objects.get(request=access_request)
    careless_api_call(
        connection,
        ref=f"task:{task.pk}",
        base_url=sim.base_url,
        secret=secret,
        session_id=session_id,
    )
    Connection.objects.filter(pk=connection.pk).update(
        last_error=f"auth failed for {secret}", last_test_message=f"ok as {secret}"
    )
    return SimpleNamespace(
        connection=connection, request=access_request, task=task, session_id=session_id
    )
