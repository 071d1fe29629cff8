from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "dicomflow.api"
    label = "api"

    def ready(self):
        from dicomflow.api import schema_extensions  # noqa: F401  (registers the X-Api-Key scheme)
