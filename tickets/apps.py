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
        # Notifications: the same way, after the change they tell of has committed.
        services.notifications.notification_wanted.connect(
            jobs.queue_notification, dispatch_uid="tickets-notifications"
        )
        # A person and the console user they sign in as are linked when their username or
        # email address match (governance: nobody decides their own access).
        from django.contrib.auth.models import User
        from django.db.models.signals import pre_save

        from .models import Identity

        pre_save.connect(
            services.governance.link_identity, sender=Identity, dispatch_uid="tickets-link-identity"
        )
        post_save.connect(
            services.governance.link_user, sender=User, dispatch_uid="tickets-link-user"
        )
        # Notes to tickets and callback deliveries are sent at once, and by their schedules.
        services.notes_wanted.connect(jobs.queue_notes, dispatch_uid="tickets-notes")
        services.deliveries_wanted.connect(jobs.queue_deliveries, dispatch_uid="tickets-callbacks")
        # Every request status change queues its callback deliveries, in its transaction.
        services.request_moved.connect(
            services.requests_changed, dispatch_uid="tickets-request-callbacks"
        )
        # A finished request lets SCIM provisioning submit what waited for it.
        from .services import completion, scim

        completion.request_finished.connect(
            scim.scim_reconcile_request, dispatch_uid="tickets-scim-follow-up"
        )
