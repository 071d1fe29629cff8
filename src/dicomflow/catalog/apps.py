from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "dicomflow.catalog"
    label = "catalog"

    def ready(self):
        # Bind shared tasks to our Celery app in every Django process (web, worker, CLI).
        from dicomflow import celery_app  # noqa: F401
        from dicomflow.catalog import signals

        signals.connect()  # analysis after every import session
