"""`manage.py prune_api_calls`: one run of the retention job in the foreground."""

from django.core.management.base import BaseCommand

from tickets import jobs


class Command(BaseCommand):
    help = (
        "Delete call log rows older than APICALL_RETENTION_DAYS (not those of tasks still in "
        "progress), as the hourly schedule does."
    )

    def handle(self, *args, **options):
        self.stdout.write(jobs.prune_api_calls(trigger="command"))
