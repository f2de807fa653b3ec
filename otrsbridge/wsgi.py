"""WSGI entry point, used by gunicorn (`gunicorn otrsbridge.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "otrsbridge.settings")
application = get_wsgi_application()
