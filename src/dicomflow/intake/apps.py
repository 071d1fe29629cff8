from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "dicomflow.intake"
    label = "intake"
