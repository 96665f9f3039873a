"""Staff screens for brands, menus, stores and orders.

Catalogue rows (brands, products, stores) are ordinary data staff edit. Orders are read-only:
their state and money change only through `orders.services`, which the two actions call
(cancel before acceptance releases the card; "re-send to store" queues the fulfilment task).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q

from accounts.models import User
from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits, ids_or_none, phone_prefix
from miandan.tasks import enqueue
from vouchers.models import Voucher

from .models import Brand, Order, OrderEvent, OrderItem, Product, Store
from .services import ADVANCE_TASK, CANCELLABLE, order_transition


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "participating")
    list_filter = ("participating",)
    search_fields = ("name", "slug")


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "category", "price", "default_size", "is_default", "active")
    list_filter = ("brand", "category", "active", "is_default")
    search_fields = ("name", "aliases")
    list_select_related = ("brand",)


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "city", "district", "open_24h", "opens_at", "closes_at", "capacity_per_minute",
                    "active")
    list_filter = ("brand", "city", "active", "open_24h")
    search_fields = ("name", "address", "district")
    list_select_related = ("brand",)
    filter_horizontal = ("sold_out",)
    show_full_result_count = False


class OrderItemInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderItem
    extra = 0
    fields = ("product", "quantity", "size", "sugar", "ice", "unit_price", "line_total")


class OrderEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderEvent
    extra = 0
    fields = ("from_status", "to_status", "note", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Order)
class OrderAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "user", "store", "status", "total_price", "subsidy", "amount_to_pay", "voucher", "created_at")
    list_filter = ("status", "campaign", "store__brand")
    search_fields = ("=id", "user__phone", "voucher__code", "merchant_ref")
    list_select_related = ("user", "store__brand", "voucher")
    date_hierarchy = "created_at"
    # Newest first by placement time (ids follow it): a day of the date hierarchy is then a range of the
    # created_at index read backwards, instead of the primary key walked past every later order.
    ordering = ("-created_at", "-id")
    inlines = (OrderItemInline, OrderEventInline)
    actions = ("cancel_orders", "resend_orders")
    search_help_text = "订单号、手机号（可只输前几位）、免单卡号或门店单号"
    show_full_result_count = False

    def search_q(self, request, term: str) -> Q | None:
        # Joined lookups resolved to ids first, so the filter is an OR of this table's indexes.
        if digits(term):
            q = Q(pk=int(term)) if len(term) <= 18 else Q(pk__in=[])
            if not phone_prefix(term):
                return q
            users = ids_or_none(User.objects.filter(phone__startswith=term).values_list("pk", flat=True))
            return q | Q(user_id__in=users)
        cards = ids_or_none(Voucher.objects.filter(code=term.upper()).values_list("pk", flat=True))
        return Q(voucher_id__in=cards) | Q(merchant_ref=term)

    def has_change_permission(self, request, obj=None):
        # The actions need the change permission; the form itself stays read-only (no editable fields).
        return request.user.has_perm("orders.change_order")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.action(description="取消订单（门店接单前；退回免单卡）")
    def cancel_orders(self, request, queryset):
        done = 0
        for order_id in queryset.values_list("pk", flat=True):
            if order_transition(order_id=order_id, from_statuses=CANCELLABLE, to_status=Order.Status.CANCELLED,
                                note=f"客服取消（{request.user}）"):
                done += 1
        skipped = queryset.count() - done
        self.message_user(request, f"已取消 {done} 单" + (f"，{skipped} 单已接单或已结束未取消" if skipped else ""),
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="重新发送给门店（仅进行中的订单）")
    def resend_orders(self, request, queryset):
        ids = list(queryset.filter(status__in=["placed", "sent_to_store", "accepted", "delivering"])
                   .values_list("pk", flat=True))
        sent = sum(enqueue(ADVANCE_TASK, order_id) for order_id in ids)
        unsent = f"，{len(ids) - sent} 单暂时无法发送（队列不可用）" if sent < len(ids) else ""
        self.message_user(request, f"已重新发送 {sent} 单{unsent}", messages.SUCCESS if not unsent else messages.WARNING)
