"""Settings for OTRS Bridge, read from the environment through django-environ.

Every value that differs between a laptop and production comes from an environment
variable (see README, "Settings"). Development defaults for secrets are used only
when DEBUG is on; with DEBUG off a missing secret stops start-up with a clear message.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-never-use-in-production-0123456789"
# A fixed Fernet key for development only; production must set FIELD_ENCRYPTION_KEY.
_DEV_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHktZmllbGQta2V5LWRvLW5vdC11c2UtISE="


def _secret(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(
        f"{name} is not set. Set it in the environment (DEBUG is off, so no development default is used)."
    )


SECRET_KEY = _secret("SECRET_KEY", _DEV_SECRET_KEY)
# Comma-separated Fernet keys: the first encrypts, all of them decrypt (key rotation).
FIELD_ENCRYPTION_KEYS = [
    k.strip()
    for k in _secret("FIELD_ENCRYPTION_KEY", _DEV_FIELD_ENCRYPTION_KEY).split(",")
    if k.strip()
]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_q",
    # Before otrsbridge: axes counts a failed login before otrsbridge.logins logs it.
    "axes",
    "otrsbridge.apps.OtrsBridgeConfig",
    "connections",
    "tickets",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # CSP, Permissions-Policy, no-store (after WhiteNoise: static files keep their caching).
    "otrsbridge.headers.SecurityHeadersMiddleware",
    # Last, as axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "otrsbridge.urls"
WSGI_APPLICATION = "otrsbridge.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
# Default: a SQLite file under var/ in WAL mode, so gunicorn and the django-q2 cluster can
# share it. PostgreSQL through DATABASE_URL=postgres://… for more than one machine.
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'otrsbridge.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # Take the write lock at BEGIN: concurrent writers then wait for `timeout`
            # instead of failing with "database is locked" on lock upgrade.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # A file, not memory: the tests start worker threads and processes that share it.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("TEST_SQLITE_PATH", default=str(VAR_DIR / "test.sqlite3"))
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# axes first: it refuses a locked-out login before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tickets:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files: whitenoise with hashed, compressed names; no CDN ------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Mail: console by default, e.g. EMAIL_URL=smtp+tls://user:pass@host:587 ----------------
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="otrs-bridge@localhost")
# Where people open the console: the links in notification emails start with it.
CONSOLE_URL = env.str("CONSOLE_URL", default="http://127.0.0.1:8000")

# --- Background work: django-q2 --------------------------------------------------------------
# Redis broker when REDIS_URL is set, the ORM broker otherwise. `timeout` must stay below
# `retry` (a system check enforces it); max_attempts is explicit because the task wrappers
# already record failures, and a blind re-run would only repeat them.
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="otrsbridge"),
    "workers": env.int("Q_WORKERS", default=4),
    "timeout": 240,
    "retry": 300,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 500,
    "label": "Background jobs",
    "poll": 0.5,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# How long one job run may keep claiming work before it stops and leaves the rest for the
# next run: well below Q_CLUSTER["timeout"], so a run never gets killed mid-ticket.
JOB_TIME_BUDGET_SECONDS = env.int("JOB_TIME_BUDGET_SECONDS", default=120)
# Threads one provisioning run uses to create tickets in parallel, at most PROVISION_THREADS_MAX:
# each holds a database connection and a socket, and far more than the database and OTRS can
# serve at once only queue (at 100,000 the process could not start its threads at all).
PROVISION_THREADS_MAX = 64
PROVISION_THREADS = env.int("PROVISION_THREADS", default=4)
if not 1 <= PROVISION_THREADS <= PROVISION_THREADS_MAX:
    raise ImproperlyConfigured(
        f"PROVISION_THREADS is {PROVISION_THREADS}; it must be between 1 and {PROVISION_THREADS_MAX}"
    )
# How long a claimed task is its worker's. A live worker renews its leases every third of
# this; the tasks of a worker killed mid-run are taken over (OTRS searched first) after it.
PROVISION_LEASE_SECONDS = env.float("PROVISION_LEASE_SECONDS", default=60.0)
# Retry backoff of a task after a transient failure: base × 2^(attempt-1), ±25% jitter, capped.
PROVISION_BACKOFF_SECONDS = env.float("PROVISION_BACKOFF_SECONDS", default=30.0)
PROVISION_BACKOFF_MAX_SECONDS = env.float("PROVISION_BACKOFF_MAX_SECONDS", default=3600.0)
# How long one callback delivery to an API client may take in all, connecting included.
CALLBACK_TIMEOUT_SECONDS = env.float("CALLBACK_TIMEOUT_SECONDS", default=15.0)

# Call log rows (ApiCall) older than this are deleted by the hourly retention job, except
# those of tasks still in progress. TaskEvents are kept.
APICALL_RETENTION_DAYS = env.int("APICALL_RETENTION_DAYS", default=30)
if APICALL_RETENTION_DAYS < 1:
    raise ImproperlyConfigured(
        f"APICALL_RETENTION_DAYS is {APICALL_RETENTION_DAYS}; it must be at least 1 (days)."
    )

# --- Operations: /healthz, /readyz, /metrics ---------------------------------------------------
# /metrics wants `Authorization: Bearer <METRICS_TOKEN>` when it is set; without it only
# clients on the loopback address get an answer.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and the Prometheus scraper usually speak plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy of every response (otrsbridge/headers.py; Django 6's SECURE_CSP
# shape). Scripts and styles come only from static/ (htmx is vendored; no page has inline
# script, inline style or an on…= handler). The admin's icons are data: URIs in its CSS.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Browser features no page uses, refused to the page and to anything it could embed.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
}
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _origin(name: str, url: str) -> str:
    """`https://idp.example.com` of a URL; a value that is no http(s) URL stops start-up."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"{name}: {url!r} is not an http(s) URL.")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _networks(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of CIDRs; a typo stops start-up instead of refusing nothing."""
    values = [v.strip() for v in env.list(name, default=default) if v.strip()]
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {value!r} is not an address range; write CIDRs separated by commas, "
                "e.g. 169.254.0.0/16,fe80::/10"
            ) from None
    return values


# Address ranges no connection may reach (connections/addresses.py): link-local and the cloud
# metadata services (AWS, GCP, Azure, Oracle at 169.254.169.254; AWS IPv6; Alibaba; Azure's
# wire server). Private ranges and loopback are allowed: OTRS usually lives there.
OTRS_REFUSED_NETWORKS = _networks(
    "OTRS_REFUSED_NETWORKS",
    [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "168.63.129.16/32",
    ],
)

# --- Login lockout: django-axes, on the console's and the admin's login alike ---------------
# After AXES_FAILURE_LIMIT failed logins in a row, the same username from the same address is
# refused for AXES_COOLOFF_MINUTES (each try while locked starts the wait again; 0 locks
# until `manage.py axes_reset…`). By username and address together, so nobody can lock a
# user out from elsewhere; AXES_LOCKOUT_PARAMETERS=username+ip_address,ip_address also
# locks an address that tries many usernames (see README, "Security").
_LOCKOUT_NAMES = {"username", "ip_address", "user_agent"}


def _lockout_parameters(text: str) -> list[str | list[str]]:
    groups: list[str | list[str]] = []
    for group in (g.strip() for g in text.split(",") if g.strip()):
        names = [n.strip() for n in group.split("+")]
        unknown = sorted(set(names) - _LOCKOUT_NAMES)
        if unknown:
            raise ImproperlyConfigured(
                f"AXES_LOCKOUT_PARAMETERS: {', '.join(unknown)} in {group!r} is not one of "
                f"{', '.join(sorted(_LOCKOUT_NAMES))} (groups by commas, names joined by +)."
            )
        groups.append(names if len(names) > 1 else names[0])
    if not groups:
        raise ImproperlyConfigured("AXES_LOCKOUT_PARAMETERS is empty.")
    return groups


def _at_least(name: str, value: float, low: float) -> float:
    if value < low:
        raise ImproperlyConfigured(f"{name} is {value}; it must be at least {low:g}.")
    return value


AXES_FAILURE_LIMIT = int(
    _at_least("AXES_FAILURE_LIMIT", env.int("AXES_FAILURE_LIMIT", default=5), 1)
)
_COOLOFF_MINUTES = _at_least(
    "AXES_COOLOFF_MINUTES", env.float("AXES_COOLOFF_MINUTES", default=15.0), 0
)
AXES_COOLOFF_TIME = timedelta(minutes=_COOLOFF_MINUTES) if _COOLOFF_MINUTES else None
AXES_LOCKOUT_PARAMETERS = _lockout_parameters(
    env.str("AXES_LOCKOUT_PARAMETERS", default="username+ip_address")
)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "otrsbridge.logins.locked_out"
AXES_CLIENT_IP_CALLABLE = "otrsbridge.logins.client_address"
AXES_USERNAME_CALLABLE = "otrsbridge.logins.login_username"
# Proxies in front of the bridge that append the client's address to X-Forwarded-For; 0
# (the default) trusts no header and uses the address of the connection itself.
TRUSTED_PROXY_COUNT = int(
    _at_least("TRUSTED_PROXY_COUNT", env.int("TRUSTED_PROXY_COUNT", default=0), 0)
)

# --- Single sign-on: OpenID Connect (otrsbridge/sso.py, mozilla-django-oidc) ------------------
# On when OIDC_CLIENT_ID is set; the local login stays for break-glass admins. The IdP's
# groups (OIDC_GROUPS_CLAIM) give the console's roles, the groups of tickets/migrations/
# 0002_roles.py: OIDC_<ROLE>_GROUPS lists the IdP group names (or ids) that give each one.
CONSOLE_ROLES = ("requesters", "approvers", "operators", "admins")
OIDC_RP_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_ISSUER = env.str("OIDC_ISSUER", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_USERINFO_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_JWKS_ENDPOINT", default="")
OIDC_RP_SIGN_ALGO = env.str("OIDC_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_USERNAME_CLAIM = env.str("OIDC_USERNAME_CLAIM", default="preferred_username")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_ROLE_GROUPS = {
    role: env.list(f"OIDC_{role.upper()}_GROUPS", default=[role]) for role in CONSOLE_ROLES
}
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 10
OIDC_CREATE_USER = True
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
# RP-initiated logout: with the IdP's end-session endpoint set, the console's "Log out" ends
# the IdP session too. mozilla-django-oidc then keeps the ID token in the session, to send
# it back as id_token_hint (Okta and Keycloak require it).
OIDC_OP_LOGOUT_ENDPOINT = env.str("OIDC_END_SESSION_ENDPOINT", default="")
OIDC_STORE_ID_TOKEN = bool(OIDC_OP_LOGOUT_ENDPOINT)
OIDC_OP_LOGOUT_URL_METHOD = "otrsbridge.sso.provider_logout_url"
LOGIN_REDIRECT_URL_FAILURE = "/login/"
if OIDC_ENABLED:
    _missing = [
        name
        for name, value in (
            ("OIDC_CLIENT_SECRET", OIDC_RP_CLIENT_SECRET),
            ("OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
            ("OIDC_TOKEN_ENDPOINT", OIDC_OP_TOKEN_ENDPOINT),
            ("OIDC_JWKS_ENDPOINT", OIDC_OP_JWKS_ENDPOINT),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(
            f"OIDC_CLIENT_ID is set, so single sign-on is on, but {', '.join(_missing)} "
            "is not set (see README, Single sign-on)."
        )
    AUTHENTICATION_BACKENDS.append("otrsbridge.sso.RoleMappingBackend")
    # The sign-in button leads the browser to the IdP, and a form may follow it there.
    # So does the logout form, to the end-session endpoint.
    SECURE_CSP["form-action"] = [
        *SECURE_CSP["form-action"],
        *dict.fromkeys(
            _origin(name, url)
            for name, url in (
                ("OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
                ("OIDC_END_SESSION_ENDPOINT", OIDC_OP_LOGOUT_ENDPOINT),
            )
            if url
        ),
    ]

# Largest upload accepted by the package import (bytes).
PACKAGE_MAX_BYTES = env.int("PACKAGE_MAX_BYTES", default=5 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = PACKAGE_MAX_BYTES

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"answers": {"()": "otrsbridge.log_filters.AnswersWithoutTraceback"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["answers"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own console handler (DEBUG only) would print each record a second time
        # beside the root's; its records reach the root handler alone.
        "django": {"level": "INFO", "handlers": []},
        "django.db.backends": {"level": "WARNING"},
        # otrsbridge.logins writes the one line per failed login; axes' own lines repeat it.
        "axes": {"level": "ERROR"},
    },
}

# How the connection admin's template preview gets the variables of a real task
# (`connections` never imports `tickets`; it resolves this dotted path instead).
OTRSBRIDGE_TASK_CONTEXT = "tickets.services.task_context"

# Optional overrides for one machine, in otrsbridge/local_settings.py (git ignores it); the
# environment variables above are the supported way to configure the bridge.
try:
    from .local_settings import *  # noqa: F401,F403
except ImportError:
    pass
