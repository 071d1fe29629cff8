from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "dicomflow.api"
    label = "api"
