"""WSGI entry point (waitress in ``dicomflow web`` / ``dicomflow serve``; any WSGI server works)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
application = get_wsgi_application()
