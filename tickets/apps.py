from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete, post_save


def _sync_schedules(sender, **kwargs):
    from . import services

    transaction.on_commit(services.schedules_sync)


class TicketsConfig(AppConfig):
    name = "tickets"
    verbose_name = "Requests and tickets"

    def ready(self):
        # Saving or deleting a connection re-registers the job schedules, by name, so
        # intervals follow the connection and no schedule is ever registered twice.
        from connections.models import Connection

        post_save.connect(_sync_schedules, sender=Connection, dispatch_uid="tickets-schedules-save")
        post_delete.connect(
            _sync_schedules, sender=Connection, dispatch_uid="tickets-schedules-delete"
        )
