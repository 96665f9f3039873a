from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "miandan.api"
    label = "api"
    verbose_name = "API 基础设施"
