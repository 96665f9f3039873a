from django.apps import AppConfig


class VouchersConfig(AppConfig):
    name = "vouchers"
    verbose_name = "免单卡"

    def ready(self) -> None:
        from campaign.services import BUDGET_LISTENERS
        from miandan.api.metrics import register_state_reader

        from . import admission
        from .selectors import card_gauges

        # A budget raise or a switch flip clears the "budget known exhausted" hint in Redis at once.
        if admission.clear_exhausted not in BUDGET_LISTENERS:
            BUDGET_LISTENERS.append(admission.clear_exhausted)
        register_state_reader("cards", card_gauges)  # /metrics cards by status

        from miandan.api.guard import register_prefetch

        from .api import join_prefetch

        register_prefetch(join_prefetch)  # the join's Redis precheck rides in the guard's rate-limit round trip
