"""The simulator's knobs: ``SimConfig``, which of its fields ``POST /_sim/config`` may
change while the simulator runs, how those values are checked, and how the config is
shown without its secrets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_WEBSERVICE = "GenericTicketConnectorREST"

# Keys accepted by POST /_sim/config and their types.
MUTABLE = {
    "latency_ms": float,
    "fail_rate": float,
    "drop_after_commit": float,
    "html_errors": bool,
    "session_ttl": float,
    "session_max_ttl": float,
    "webhook_url": str,
    "webhook_secret_header": str,
    "max_length": int,
    "seed": int,
    "log_requests": bool,
}
SECRET_FIELDS = ("password", "webhook_secret_header")


@dataclass
class SimConfig:
    """Behaviour of one simulator instance.  Knobs may change while it runs."""

    latency_ms: float = 0
    fail_rate: float = 0.0
    drop_after_commit: float = 0.0
    html_errors: bool = False
    session_ttl: float = 7200
    session_max_ttl: float = 57600
    webhook_url: str = ""
    webhook_secret_header: str = ""
    user: str = "bridge"
    password: str = "bridge-demo-password"
    webservice: str = DEFAULT_WEBSERVICE
    seed: int | None = None
    max_length: int = 100_000_000
    welcome_ticket: bool = False
    dynamic_fields: tuple = ()
    webhook_backoff: tuple = (0.2, 0.5, 1, 2, 4, 8, 15, 30, 60)
    webhook_timeout: float = 10.0
    log_requests: bool = False

    def public(self) -> dict:
        """The config as JSON for /_sim/config, secrets left out."""
        data = asdict(self)
        for name in SECRET_FIELDS:
            data.pop(name)
        data["webhook_url"] = mask_url(self.webhook_url)
        data["webhook_secret_header_set"] = bool(self.webhook_secret_header)
        data["dynamic_fields"] = list(self.dynamic_fields)
        data["webhook_backoff"] = list(self.webhook_backoff)
        return data


def mask_url(url: str) -> str:
    """Hide query values that look like credentials (``?token=...``) for display."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for pair in query.split("&"):
        key, eq, _value = pair.partition("=")
        secret = any(word in key.lower() for word in ("token", "secret", "key", "pass"))
        parts.append(f"{key}{eq}***" if eq and secret else pair)
    return f"{base}?{'&'.join(parts)}"


def _coerce(name: str, value):
    """Validate one /_sim/config value; raises ValueError with a readable message."""
    kind = MUTABLE[name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if value in (0, 1, "0", "1", "true", "false"):
            return value in (1, "1", "true")
        raise ValueError(f"{name} must be a boolean")
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    if name in ("fail_rate", "drop_after_commit") and number > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return number


def checked_changes(changes: dict) -> dict:
    """The knob changes, validated and coerced; raises ValueError with a readable message."""
    unknown = sorted(set(changes) - set(MUTABLE))
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
    return {name: _coerce(name, value) for name, value in changes.items()}
