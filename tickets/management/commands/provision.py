"""`manage.py provision`: one provisioning cycle in the foreground (what the schedule runs)."""

from django.core.management.base import BaseCommand, CommandError

from tickets import jobs, services

from ._progress import Progress


class Command(BaseCommand):
    help = "Create tickets for due provisioning tasks, once, showing progress."

    def add_arguments(self, parser):
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Parallel threads, 1 to PROVISION_THREADS_MAX (default PROVISION_THREADS).",
        )

    def handle(self, *args, workers=None, **options):
        try:
            workers = jobs.provision_threads(workers)
        except ValueError as exc:
            raise CommandError(f"--workers: {exc}") from None
        due = services.due_tasks().count()
        progress = Progress(self.stdout, "provision", total=due or None)
        run = jobs.provision_job(
            trigger="command", workers=workers, progress=lambda note: progress.step(1, note)
        )
        progress.finish(f"{run.get_status_display()}: {run.summary or run.error}")
        if run.status != run.Status.OK:
            raise SystemExit(1)
