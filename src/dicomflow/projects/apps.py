from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "dicomflow.projects"
    label = "projects"

    def ready(self):
        from dicomflow.catalog import visibility
        from dicomflow.projects import notifications, selectors, uploads

        visibility.install(selectors._scope, selectors.can_see_clinical)  # the admin of lower layers scopes by it
        uploads.connect()  # uploads into a project are staged (and processed) once imported
        notifications.connect()  # mails when long jobs fail (or finish), and the store-full alarm
