from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "门店与订单"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from miandan.api.metrics import register_state_reader
        from vouchers.selectors import RECONCILE_CHECKS

        from . import geo, parser
        from .models import Brand, Product, Store
        from .selectors import fulfilment_gauges, order_gauges, store_cap_differences

        register_state_reader("orders", order_gauges)  # /metrics orders by state
        register_state_reader("fulfilment", fulfilment_gauges)  # in flight by state, callback lag
        if store_cap_differences not in RECONCILE_CHECKS:
            RECONCILE_CHECKS.append(store_cap_differences)  # reconcile proves the store / brand day counters

        # Keep the Redis GEO index and the parser's compiled catalogue in step with edits.
        post_save.connect(lambda sender, instance, **kw: geo.index_store(instance), sender=Store, weak=False,
                          dispatch_uid="orders-geo-save")
        post_delete.connect(lambda sender, instance, **kw: geo.unindex_store(instance.pk), sender=Store, weak=False,
                            dispatch_uid="orders-geo-delete")
        for model in (Brand, Product):
            post_save.connect(parser.catalogue_changed, sender=model, weak=False, dispatch_uid=f"orders-parser-{model.__name__}")
            post_delete.connect(parser.catalogue_changed, sender=model, weak=False,
                                dispatch_uid=f"orders-parser-del-{model.__name__}")
