from django.urls import path

from . import api

urlpatterns = [
    path("api/v1/stores/nearby", api.StoresNearbyApi.as_view(), name="stores-nearby"),
    path("api/v1/orders/chat", api.OrderChatApi.as_view(), name="order-chat"),
    path("api/v1/orders", api.OrderCreateApi.as_view(), name="order-create"),
    path("api/v1/orders/", api.OrderListApi.as_view(), name="order-list"),
    path("api/v1/orders/<int:order_id>", api.OrderDetailApi.as_view(), name="order-detail"),
    path("api/v1/orders/<int:order_id>/", api.OrderDetailApi.as_view()),
    path("api/v1/orders/<int:order_id>/cancel", api.OrderCancelApi.as_view(), name="order-cancel"),
]
