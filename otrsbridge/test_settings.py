"""Settings for the test suite: the production settings with test secrets and plain static storage.

`make test` runs the suite once on SQLite and once more on PostgreSQL when
TEST_DATABASE_URL (or DATABASE_URL) points at one.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
# Two keys: the first encrypts, both decrypt, so rotation is exercised by every test.
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEY",
    "dGVzdC1rZXktb25lLXRlc3Qta2V5LW9uZS10ZXN0LWs=,dGVzdC1rZXktdHdvLXRlc3Qta2V5LXR3by10ZXN0LWs=",
)
# Each run gets its own SQLite file, so two runs on one machine never share a database.
os.environ.setdefault(
    "TEST_SQLITE_PATH",
    os.path.join(os.path.dirname(__file__), "..", "var", f"test-{os.getpid()}.sqlite3"),
)
if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]

from .settings import *  # noqa: E402,F401,F403
from .settings import STORAGES  # noqa: E402

STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SECURE_SSL_REDIRECT = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Retries are due at once in tests; tests of the backoff itself set their own value.
PROVISION_BACKOFF_SECONDS = 0.0
