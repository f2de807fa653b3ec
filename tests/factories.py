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

    from django.contrib.auth.models import Permission

    for role, perms in importlib.import_module("tickets.migrations.0002_roles").ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def otrs_connection(
    sim,
    *,
    name: str = "otrs-demo",
    batch_size: int = 50,
    password: str = SIM_PASSWORD,
    key_field: str = "",
) -> Connection:
    """Import the shipped OTRS package pointed at a running simulator, as an admin would."""
    from connections.packages import apply_import, load_package, plan_import

    package = load_package(PACKAGE.read_bytes(), PACKAGE.name)
    values = {
        "CONNECTION": name,
        "BASEURL": sim.base_url,
        "USERNAME": SIM_USER,
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
