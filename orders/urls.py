from miandan.api.routes import both_slashes

from . import api

urlpatterns = [
    *both_slashes("api/v1/stores/nearby", api.StoresNearbyApi, name="stores-nearby"),
    *both_slashes("api/v1/orders/chat", api.OrderChatApi, name="order-chat"),
    # api.md spells this one path two ways (POST /api/v1/orders, GET /api/v1/orders/): one view, both
    # spellings answer both methods, the schema documents each method where api.md puts it.
    *both_slashes("api/v1/orders", api.OrdersApi, name="order-create", methods={"POST"}, alias_methods={"GET"}),
    *both_slashes("api/v1/orders/<int:order_id>", api.OrderDetailApi, name="order-detail"),
    *both_slashes("api/v1/orders/<int:order_id>/cancel", api.OrderCancelApi, name="order-cancel"),
    *both_slashes("api/v1/merchants/<slug:merchant>/events", api.MerchantEventsApi, name="merchant-events"),
]
