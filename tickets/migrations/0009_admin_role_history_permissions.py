"""The admins role sees what the setup screens list since the governance, conversation and
callback work: accounts and their entitlements, ticket notes, callback deliveries, the
timeline, and edits the notification templates. Without these a non-superuser admin got 403 on those lists."""

import importlib

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = {
    "admins": [
        "tickets.view_account",
        "tickets.view_accountentitlement",
        "tickets.view_ticketnote",
        "tickets.view_callbackdelivery",
        "tickets.view_taskevent",
        "tickets.view_notificationtemplate",
        "tickets.add_notificationtemplate",
        "tickets.change_notificationtemplate",
    ],
}


def forwards(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    importlib.import_module("tickets.migrations.0002_roles").grant(apps, ADDED)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for role, perms in ADDED.items():
        group = Group.objects.filter(name=role).first()
        if group is None:
            continue
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.remove(
                *group.permissions.filter(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("tickets", "0008_ticket_note_maybe_added"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, revoke)]
