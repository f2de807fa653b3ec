"""`manage.py poll_tickets`: one polling cycle in the foreground (what the schedule runs)."""

from django.core.management.base import BaseCommand

from tickets import jobs
from tickets.models import Ticket

from ._progress import Progress


class Command(BaseCommand):
    help = (
        "One poll cycle: the open tickets that changed (or, when due, every open ticket), "
        "their states applied, showing progress."
    )

    def handle(self, *args, **options):
        progress = Progress(
            self.stdout, "poll", total=Ticket.objects.filter(is_open=True).count() or None
        )
        run = jobs.poll_job(trigger="command", progress=progress.step)
        progress.finish(f"{run.get_status_display()}: {run.summary or run.error}")
        if run.status != run.Status.OK:
            raise SystemExit(1)
