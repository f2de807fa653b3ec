"""System checks for configuration that would otherwise fail silently at run time."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_q_cluster(app_configs, **kwargs):
    """django-q2 re-delivers a task whose run outlives `retry`: keep timeout below it."""
    errors = []
    conf = settings.Q_CLUSTER
    timeout, retry = conf.get("timeout"), conf.get("retry")
    if timeout is None or retry is None or timeout >= retry:
        errors.append(
            Error(
                f"Q_CLUSTER timeout ({timeout}) must be set and below retry ({retry}); "
                "otherwise tasks are re-delivered before they finish.",
                id="otrsbridge.E001",
            )
        )
    if conf.get("max_attempts") in (None, 0):
        errors.append(
            Error(
                "Q_CLUSTER max_attempts must be explicit (0 means retry forever).",
                id="otrsbridge.E002",
            )
        )
    if settings.JOB_TIME_BUDGET_SECONDS >= (timeout or 0):
        errors.append(
            Error(
                f"JOB_TIME_BUDGET_SECONDS ({settings.JOB_TIME_BUDGET_SECONDS}) must be below "
                f"Q_CLUSTER timeout ({timeout}).",
                id="otrsbridge.E003",
            )
        )
    return errors


@register()
def check_provision_lease(app_configs, **kwargs):
    """A lease is renewed every third of its length: a tiny one would only spin."""
    lease = settings.PROVISION_LEASE_SECONDS
    if lease < 1:
        return [
            Error(
                f"PROVISION_LEASE_SECONDS ({lease}) must be at least 1 (60 is the default).",
                id="otrsbridge.E004",
            )
        ]
    return []
