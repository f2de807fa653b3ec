"""Create the four roles as groups with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "requesters": ["tickets.add_accessrequest", "tickets.view_accessrequest", "tickets.view_identity"],
    "approvers": [
        "tickets.view_accessrequest",
        "tickets.approve_accessrequest",
        "tickets.view_all_requests",
        "tickets.view_identity",
        "tickets.view_provisioningtask",
        "tickets.view_ticket",
    ],
    "operators": [
        "tickets.view_accessrequest",
        "tickets.view_all_requests",
        "tickets.operate_tasks",
        "tickets.view_identity",
        "tickets.view_provisioningtask",
        "tickets.view_ticket",
        "tickets.view_jobrun",
        "connections.view_connection",
        "connections.view_apicall",
    ],
    "admins": [
        "tickets.view_accessrequest",
        "tickets.view_all_requests",
        "tickets.operate_tasks",
        "tickets.view_identity",
        "tickets.change_identity",
        "tickets.view_provisioningtask",
        "tickets.view_ticket",
        "tickets.view_jobrun",
        "tickets.add_apiclient",
        "tickets.change_apiclient",
        "tickets.view_apiclient",
        "connections.add_connection",
        "connections.change_connection",
        "connections.view_connection",
        "connections.add_securitysystem",
        "connections.change_securitysystem",
        "connections.view_securitysystem",
        "connections.add_endpoint",
        "connections.change_endpoint",
        "connections.view_endpoint",
        "connections.view_apicall",
        "connections.view_connectiontoken",
    ],
}


def create_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    grant(apps, ROLES)


def grant(apps, roles: dict[str, list[str]]) -> None:
    """Give each role (a group, made if missing) its "app.codename" permissions. Later
    migrations that widen a role, and the tests that rebuild the roles, use it too."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in roles.items():
        group, _ = Group.objects.get_or_create(name=role)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                group.permissions.add(permission)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tickets", "0001_initial"),
        ("connections", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
