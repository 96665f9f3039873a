from django.apps import AppConfig


class CampaignConfig(AppConfig):
    name = "campaign"
    verbose_name = "活动与预算"

    def ready(self) -> None:
        # miandan sits below every app and imports none: the apps hand it what it needs here.
        from miandan.api.guard import register_switch_check
        from miandan.api.metrics import register_state_reader

        from .gate import guard_switch_check
        from .selectors import budget_gauges, pace_gauges

        register_switch_check(guard_switch_check)  # the guard's kill-switch lookup
        register_state_reader("budget", budget_gauges)  # /metrics budget gauges
        register_state_reader("pace", pace_gauges)  # /metrics spend plan vs actual, the pace alert
