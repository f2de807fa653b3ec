"""`manage.py register_schedules`: (re)register the job schedules by name; safe to repeat."""

from django.core.management.base import BaseCommand

from tickets import jobs


class Command(BaseCommand):
    help = "Register one provisioning and one polling schedule per connection (idempotent)."

    def handle(self, *args, **options):
        count = jobs.schedules_sync()
        self.stdout.write(f"{count} schedule(s) registered")
