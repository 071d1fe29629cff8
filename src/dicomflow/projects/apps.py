from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "dicomflow.projects"
    label = "projects"

    def ready(self):
        from dicomflow.projects import notifications, uploads

        uploads.connect()  # uploads into a project are staged (and processed) once imported
        notifications.connect()  # mails when long jobs fail (or finish), and the store-full alarm
