from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete, post_save


def _sync_schedules(sender, **kwargs):
    from . import jobs

    transaction.on_commit(jobs.schedules_sync)


class TicketsConfig(AppConfig):
    name = "tickets"
    verbose_name = "Requests and tickets"

    def ready(self):
        # Saving or deleting a connection re-registers the job schedules, by name, so
        # intervals follow the connection and no schedule is ever registered twice.
        from connections.models import Connection

        from . import jobs, services

        post_save.connect(_sync_schedules, sender=Connection, dispatch_uid="tickets-schedules-save")
        post_delete.connect(
            _sync_schedules, sender=Connection, dispatch_uid="tickets-schedules-delete"
        )
        # Instant provisioning: services ask for it on commit, the jobs queue it (services
        # cannot import the jobs, which import them).
        services.provisioning_wanted.connect(
            jobs.queue_provisioning, dispatch_uid="tickets-instant-provisioning"
        )
        # A finished request lets SCIM provisioning submit what waited for it.
        from .services import completion, scim

        completion.request_finished.connect(
            scim.scim_reconcile_request, dispatch_uid="tickets-scim-follow-up"
        )
