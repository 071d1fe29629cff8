from django.apps import AppConfig


class DeidConfig(AppConfig):
    name = "dicomflow.deid"
    label = "deid"
    verbose_name = "De-identification"
