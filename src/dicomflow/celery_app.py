"""The Celery application. Tasks live in each app's ``tasks.py`` and only call a service."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")

app = Celery("dicomflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- a worker's life: heartbeat for `dicomflow serve`, and taking over work whose worker died ---------
@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    """Touch ``$DICOMFLOW_HOME/run/<node>.heartbeat`` every 5 s (``serve`` restarts a worker whose file
    goes stale), then queue again the work of workers that died (``dicomflow.progress.recover_abandoned``)."""
    import logging
    import threading

    from django.conf import settings

    from dicomflow import progress
    from dicomflow.core.heartbeat import beat_forever, heartbeat_path

    path = heartbeat_path(settings.RUN_DIR, getattr(sender, "hostname", "") or "worker")
    threading.Thread(target=beat_forever, args=(path,), name="dicomflow-heartbeat", daemon=True).start()
    try:
        progress.recover_abandoned()
    except Exception:  # the recovery scan never keeps a worker from serving
        logging.getLogger("dicomflow.progress").exception("recovering abandoned work failed")
