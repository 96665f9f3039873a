from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from miandan.api.fields import StrictCharField
from miandan.api.idempotency import idempotent
from miandan.api.pagination import Pagination, paginated

from .errors import OrderNotFound
from .merchant import EVENT_KINDS, SIGNATURE_HEADER, TIMESTAMP_HEADER
from .models import ICES, SIZES, SUGARS, Order
from .parser import MAX_CUPS
from .selectors import order_get, order_list, stores_nearby
from .services import Line, OrderRequest, merchant_callback, order_cancel, order_chat, order_place

MONEY = {"max_digits": 16, "decimal_places": 2}


def _blank_none(value: str) -> str | None:
    return value or None


class StoreOutput(serializers.Serializer):
    id = serializers.IntegerField()
    brand = serializers.CharField(source="brand.name")
    name = serializers.CharField()
    city = serializers.CharField()
    district = serializers.CharField()
    address = serializers.CharField()
    lat = serializers.FloatField()
    lng = serializers.FloatField()
    open_24h = serializers.BooleanField()
    opens_at = serializers.TimeField(allow_null=True)
    closes_at = serializers.TimeField(allow_null=True)


class NearbyStoreOutput(StoreOutput):
    distance_m = serializers.IntegerField(read_only=True)

    def to_representation(self, hit):
        data = StoreOutput(hit.store).data
        data["distance_m"] = hit.distance_m
        return data


class ItemOutput(serializers.Serializer):
    brand = serializers.CharField()
    product = serializers.CharField()
    product_id = serializers.IntegerField()
    quantity = serializers.IntegerField()
    size = serializers.CharField(allow_null=True)
    sugar = serializers.CharField(allow_null=True)
    ice = serializers.CharField(allow_null=True)
    unit_price = serializers.DecimalField(**MONEY)
    line_total = serializers.DecimalField(**MONEY)


def _item(i) -> dict:
    return {"brand": i.product.brand.name, "product": i.product.name, "product_id": i.product.pk, "quantity": i.quantity,
            "size": _blank_none(i.size), "sugar": _blank_none(i.sugar), "ice": _blank_none(i.ice),
            "unit_price": i.unit_price, "line_total": i.line_total}


class EventOutput(serializers.Serializer):
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class OrderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    status_display = serializers.CharField(source="get_status_display")
    campaign = serializers.CharField(source="campaign.slug", allow_null=True, default=None)
    store = StoreOutput()
    items = serializers.SerializerMethodField()
    total_price = serializers.DecimalField(**MONEY)
    subsidy = serializers.DecimalField(**MONEY)
    amount_to_pay = serializers.DecimalField(**MONEY)
    voucher = serializers.CharField(source="voucher.code", allow_null=True, default=None)
    source_text = serializers.CharField()
    failure_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    state_changed_at = serializers.DateTimeField()
    events = EventOutput(many=True)

    def get_items(self, order) -> list[dict]:
        return ItemOutput([_item(i) for i in order.items.all()], many=True).data


class RecommendationOutput(serializers.Serializer):
    reason = serializers.CharField(help_text="why this drink was chosen for an \"anything\" request (Chinese)")
    confirm_text = serializers.CharField(help_text="a sentence that orders exactly this drink, to send back on confirm")


class CorrectionOutput(serializers.Serializer):
    typed = serializers.CharField(help_text="what the user typed (a typo or part of a name)")
    product = serializers.CharField(help_text="the menu product it was read as")


class PreviewOutput(serializers.Serializer):
    preview = serializers.BooleanField(default=True)
    store = NearbyStoreOutput()
    items = ItemOutput(many=True)
    total_price = serializers.DecimalField(**MONEY)
    subsidy = serializers.DecimalField(**MONEY)
    amount_to_pay = serializers.DecimalField(**MONEY)
    voucher = serializers.CharField(allow_null=True)
    campaign = serializers.CharField(allow_null=True)
    # Chat previews only (added fields): an "anything" request's choice and the typed words read as a product.
    recommendation = RecommendationOutput(allow_null=True, required=False)
    corrections = CorrectionOutput(many=True, required=False)


def _preview(placement) -> dict:
    from .geo import Hit

    q = placement.quote
    return PreviewOutput({
        "preview": True, "store": Hit(store=q.store, distance_m=q.distance_m or 0),
        "items": [{"brand": i.product.brand.name, "product": i.product.name, "product_id": i.product.pk,
                   "quantity": i.quantity, "size": i.size, "sugar": i.sugar, "ice": i.ice, "unit_price": i.unit_price,
                   "line_total": i.line_total} for i in q.items],
        "total_price": q.total, "subsidy": placement.subsidy, "amount_to_pay": placement.amount_to_pay,
        "voucher": placement.voucher.code if placement.voucher else None,
        "campaign": placement.campaign.slug if placement.campaign else None,
        "recommendation": placement.chat.get("recommendation"),
        "corrections": placement.chat.get("corrections", []),
    }).data


def _order_out(order_id: int, user) -> dict:
    return OrderOutput(order_get(user=user, order_id=order_id)).data


class StoresNearbyApi(APIView):
    class FilterSerializer(serializers.Serializer):
        lat = serializers.FloatField(min_value=-90, max_value=90)
        lng = serializers.FloatField(min_value=-180, max_value=180)
        radius_m = serializers.IntegerField(min_value=1, max_value=10000, default=3000)

    @extend_schema(
        parameters=[OpenApiParameter("lat", float, required=True), OpenApiParameter("lng", float, required=True),
                    OpenApiParameter("radius_m", int, description="metres, default 3000, at most 10000")],
        responses=inline_serializer(
            "NearbyStoreList", fields={"count": serializers.IntegerField(), "results": NearbyStoreOutput(many=True)}
        ),
        summary="Open stores near a point, nearest first, with distance in metres",
    )
    def get(self, request):
        f = self.FilterSerializer(data=request.query_params)
        f.is_valid(raise_exception=True)
        hits = stores_nearby(**f.validated_data)
        return Response({"count": len(hits), "results": NearbyStoreOutput(hits, many=True).data})


class OrderChatApi(APIView):
    class InputSerializer(serializers.Serializer):
        # A string of any length: over 200 characters is the parser's 422 `not_understood`; not a string is 400.
        text = StrictCharField(trim_whitespace=False, allow_blank=True)
        lat = serializers.FloatField(min_value=-90, max_value=90)
        lng = serializers.FloatField(min_value=-180, max_value=180)
        campaign = serializers.SlugField(required=False, max_length=64)
        pay_full_price = serializers.BooleanField(default=False)
        preview = serializers.BooleanField(default=False)

    @extend_schema(
        request=InputSerializer,
        responses={201: OrderOutput, 200: PreviewOutput},
        summary="Order with one sentence (201); with preview=true nothing is placed (200). An \"anything\" request "
                "(随便来一杯) is always a 200 preview with `recommendation`",
    )
    @idempotent
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        placement = order_chat(user=request.user, text=v["text"], lat=v["lat"], lng=v["lng"],
                               campaign_slug=v.get("campaign"), pay_full_price=v["pay_full_price"], preview=v["preview"])
        if placement.order is None:
            return Response(_preview(placement), status=status.HTTP_200_OK)
        return Response(OrderOutput(placement.order).data, status=status.HTTP_201_CREATED)


class OptionsSerializer(serializers.Serializer):
    size = serializers.ChoiceField(choices=SIZES, required=False, allow_null=True)
    sugar = serializers.ChoiceField(choices=SUGARS, required=False, allow_null=True)
    ice = serializers.ChoiceField(choices=ICES, required=False, allow_null=True)


class OrderItemInput(serializers.Serializer):
    product = serializers.IntegerField(min_value=1)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_CUPS)
    options = OptionsSerializer(required=False)


class OrderCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        store = serializers.IntegerField(min_value=1)
        items = OrderItemInput(many=True, allow_empty=False, max_length=MAX_CUPS)
        voucher = serializers.CharField(required=False, max_length=32)
        campaign = serializers.SlugField(required=False, max_length=64)
        pay_full_price = serializers.BooleanField(default=False)
        lat = serializers.FloatField(min_value=-90, max_value=90, required=False)
        lng = serializers.FloatField(min_value=-180, max_value=180, required=False)

    @extend_schema(request=InputSerializer, responses={201: OrderOutput}, summary="Place an order at a given store")
    @idempotent
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        lines = tuple(Line(quantity=i["quantity"], product_id=i["product"],
                           **{k: (i.get("options") or {}).get(k) for k in ("size", "sugar", "ice")})
                      for i in v["items"])
        placement = order_place(user=request.user, request=OrderRequest(
            lines=lines, store_id=v["store"], lat=v.get("lat"), lng=v.get("lng"), campaign_slug=v.get("campaign"),
            voucher_code=v.get("voucher"), pay_full_price=v["pay_full_price"]))
        return Response(OrderOutput(placement.order).data, status=status.HTTP_201_CREATED)


class OrderListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Order.Status.choices, required=False)

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=Order.Status.values), OpenApiParameter("page", int),
                    OpenApiParameter("page_size", int)],
        operation_id="api_v1_orders_list",
        responses=paginated(OrderOutput, "PaginatedOrderList"),
        summary="The caller's orders, newest first",
    )
    def get(self, request):
        f = self.FilterSerializer(data=request.query_params)
        f.is_valid(raise_exception=True)
        paginator = Pagination()
        page = paginator.paginate_queryset(order_list(user=request.user, status=f.validated_data.get("status")),
                                           request, view=self)
        return paginator.get_paginated_response(OrderOutput(page, many=True).data)


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderOutput, summary="One of the caller's orders (another user's is 404)")
    def get(self, request, order_id: int):
        order = order_get(user=request.user, order_id=order_id)
        if order is None:
            raise OrderNotFound()
        return Response(OrderOutput(order).data)


class OrderCancelApi(APIView):
    @extend_schema(request=None, responses={200: OrderOutput},
                   summary="Cancel before the store accepts (200); 409 cannot_cancel after")
    def post(self, request, order_id: int):
        order = order_cancel(user=request.user, order_id=order_id)
        return Response(_order_out(order.pk, request.user))


class OrdersApi(OrderListApi, OrderCreateApi):
    """`/api/v1/orders` with or without the slash: GET lists the caller's orders, POST places one (api.md
    spells them `GET /api/v1/orders/` and `POST /api/v1/orders`; a client that mixes them up must not meet a 405)."""


class MerchantEventsApi(APIView):
    """A merchant's signed event about one order (accepted, rejected, dispatched, delivered).

    No user token: the HMAC signature over timestamp + raw body is the authentication, so the body is read raw
    (no parser) and verified before it is parsed. Answered in one short transaction; repeats are 200.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []

    class EventInput(serializers.Serializer):  # documents the body; the adapter parses and validates it
        id = serializers.CharField(max_length=64, help_text="the merchant's event id: each id is applied once")
        type = serializers.ChoiceField(choices=EVENT_KINDS)
        order = serializers.IntegerField(help_text="our order id (the idempotency key the order was sent with)")
        ref = serializers.CharField(required=False, max_length=64, help_text="the merchant's order reference")
        reason = serializers.CharField(required=False, max_length=255, help_text="why, for a rejection")
        occurred_at = serializers.DateTimeField(help_text="when it happened, merchant clock, ISO 8601 with zone")

    class OutputSerializer(serializers.Serializer):
        result = serializers.ChoiceField(
            choices=["applied", "ignored", "duplicate"],
            help_text="applied: the order moved; ignored: it was already there or past it (or final); "
                      "duplicate: this event id was received before")
        order = serializers.IntegerField()
        status = serializers.CharField(help_text="the order's status afterwards")

    @extend_schema(
        request=EventInput,
        responses={200: OutputSerializer},
        auth=[],
        parameters=[
            OpenApiParameter(TIMESTAMP_HEADER, str, OpenApiParameter.HEADER, required=True,
                             description="Unix seconds; refused when more than 300 s from our clock"),
            OpenApiParameter(SIGNATURE_HEADER, str, OpenApiParameter.HEADER, required=True,
                             description='"v1=" + hex HMAC-SHA256(MIANDAN_MERCHANT_SECRET, timestamp + "." + body)'),
        ],
        summary="Merchant callback: one signed event about one order (idempotent by event id)",
    )
    def post(self, request, merchant: str):
        result = merchant_callback(merchant=merchant, headers=request.headers, body=request.body)
        return Response({"result": result.outcome, "order": result.order_id, "status": result.status})
