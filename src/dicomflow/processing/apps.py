from django.apps import AppConfig


class ProcessingConfig(AppConfig):
    name = "dicomflow.processing"
    label = "processing"
