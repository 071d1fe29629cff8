from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "dicomflow.accounts"
    label = "accounts"
    verbose_name = "Accounts and audit"

    def ready(self):
        from dicomflow.accounts import signals

        signals.connect()
