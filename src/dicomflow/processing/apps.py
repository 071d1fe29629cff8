from django.apps import AppConfig


class ProcessingConfig(AppConfig):
    name = "dicomflow.processing"
    label = "processing"

    def ready(self) -> None:
        from dicomflow.processing import signals

        signals.connect()
