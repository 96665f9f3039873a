from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The top floor: demo data and the seed's-day simulation. It may import every app; no app imports it."""

    name = "demo"
    verbose_name = "演示与仿真"
