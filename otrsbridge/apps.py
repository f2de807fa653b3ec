from django.apps import AppConfig


class OtrsBridgeConfig(AppConfig):
    name = "otrsbridge"
    verbose_name = "OTRS Bridge"

    def ready(self):
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            logins,  # noqa: F401  (connects the failed-login log line)
        )
