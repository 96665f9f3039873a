from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "miandan.api"
    label = "api"
    verbose_name = "API 基础设施"

    def ready(self) -> None:
        from miandan import checks  # noqa: F401  (registers the project's system checks)
