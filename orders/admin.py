"""Staff screens for brands, menus, stores and orders.

Catalogue rows (brands, products, stores) are ordinary data staff edit. Orders are read-only:
their state and money change only through `orders.services`, which the two actions call
(cancel before acceptance releases the card; "re-send to store" sends an unsent order again and has the
poller ask the merchant about the others at once).
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.db.models import Q
from django.utils.html import format_html

from accounts.models import User
from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits, ids_or_none, phone_prefix
from vouchers.models import Voucher

from .models import Brand, BrandDaySubsidy, Order, OrderEvent, OrderItem, Product, Store, StoreDaySubsidy
from .services import (
    ACTIVE,
    INTERVENE_PERMISSION,
    order_staff_cancel,
    order_staff_resend,
)

_ALIAS_SPLIT = re.compile(r"[\n\r,，、;；]+")


class AliasListField(forms.CharField):
    """Aliases as plain text, one per line (commas and 、 work too), stored as the JSON list the parser reads.

    Marketing adds how people really call a drink or a brand ("芝莓", "雪王", a common typo) and the chat
    parser understands it within about a second in every process (orders.lexicon), without a deploy.
    """

    widget = forms.Textarea(attrs={"rows": 4, "cols": 40})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        out: list[str] = []
        for part in _ALIAS_SPLIT.split(text):
            part = part.strip()
            if part and part not in out:
                out.append(part)
        return out

    def validate(self, value) -> None:
        for alias in value:
            if len(alias) > 32:
                raise forms.ValidationError(f"别名“{alias[:10]}…”太长了（最多 32 个字）")


class BrandForm(forms.ModelForm):
    aliases = AliasListField(label="别名（每行一个）", required=False,
                             help_text="顾客对这个品牌的叫法，例如“雪王”“mixue”。保存后约 1 秒内聊天点单就能认出。")

    class Meta:
        model = Brand
        fields = ("aliases",)  # the admin adds every other field of the page


class ProductForm(forms.ModelForm):
    aliases = AliasListField(
        label="别名（每行一个）", required=False,
        help_text="顾客对这款饮品的叫法、简称或常见错别字，例如“芝莓”“伯牙”。保存后约 1 秒内聊天点单就能认出。"
                  "和菜单名读音相同或相近的错别字（如“芝芝梅梅”）会按拼音自动纠正，不必逐个添加。",
    )

    class Meta:
        model = Product
        fields = ("aliases",)  # the admin adds every other field of the page


def _pinyin(text: str) -> str:
    from .fuzzy import readings

    return " ".join("/".join(sorted(readings(ch))) for ch in text)


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    form = BrandForm
    list_display = ("name", "slug", "alias_list", "participating")
    list_filter = ("participating",)
    search_fields = ("name", "slug", "aliases")
    readonly_fields = ("typo_tolerance",)

    @admin.display(description="别名")
    def alias_list(self, obj: Brand) -> str:
        return "、".join(obj.aliases or []) or "—"

    @admin.display(description="错别字纠正（按拼音）")
    def typo_tolerance(self, obj: Brand) -> str:
        return format_html("{}：{}<br>同音或读音相近、且至少一半字相同的写法会被认成这个品牌，只在没有其他品牌同样接近时纠正。",
                           obj.name, _pinyin(obj.name)) if obj.pk else "—"


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductForm
    list_display = ("name", "brand", "alias_list", "category", "price", "default_size", "is_default", "active")
    list_filter = ("brand", "category", "active", "is_default")
    search_fields = ("name", "aliases")
    list_select_related = ("brand",)
    readonly_fields = ("typo_tolerance",)

    @admin.display(description="别名")
    def alias_list(self, obj: Product) -> str:
        return "、".join(obj.aliases or []) or "—"

    @admin.display(description="错别字纠正（按拼音）")
    def typo_tolerance(self, obj: Product) -> str:
        if not obj.pk:
            return "—"
        return format_html(
            "{}：{}<br>输入法打错的同音字（如把“莓”打成“梅”）会按拼音纠正成这款，预览里会写明纠正后的饮品名；"
            "四个字以上的名字还容许一个读音相近的字。只在没有别的饮品同样接近时纠正。",
            obj.name, _pinyin(obj.name))


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
        # The form itself stays read-only (no editable fields); change rights only carry the actions below.
        return request.user.has_perm(INTERVENE_PERMISSION)

    def has_intervene_permission(self, request) -> bool:
        """Cancel / re-send: support and superusers (orders.can_intervene), checked again in orders.services."""
        return request.user.has_perm(INTERVENE_PERMISSION)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.action(description="取消订单（门店接单前；退回免单卡）", permissions=["intervene"])
    def cancel_orders(self, request, queryset):
        done = order_staff_cancel(actor=request.user, order_ids=list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - done
        self.message_user(request, f"已取消 {done} 单" + (f"，{skipped} 单已接单或已结束未取消" if skipped else ""),
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="重新发送给门店（仅进行中的订单）", permissions=["intervene"])
    def resend_orders(self, request, queryset):
        ids = list(queryset.filter(status__in=ACTIVE).values_list("pk", flat=True))
        sent = order_staff_resend(actor=request.user, order_ids=ids)
        unsent = f"，{len(ids) - sent} 单暂时无法发送（队列不可用）" if sent < len(ids) else ""
        self.message_user(request, f"已重新发送 {sent} 单{unsent}", messages.SUCCESS if not unsent else messages.WARNING)


@admin.register(StoreDaySubsidy)
class StoreDaySubsidyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Daily subsidy per store (issue 20): taken at placement, given back on cancel / failure, proven by `reconcile`."""

    list_display = ["day", "campaign", "store", "subsidy"]
    list_filter = ["campaign"]
    list_select_related = ["campaign", "store"]
    date_hierarchy = "day"
    search_fields = ["store__name"]


@admin.register(BrandDaySubsidy)
class BrandDaySubsidyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Daily subsidy per brand (issue 20), same rules as per store."""

    list_display = ["day", "campaign", "brand", "subsidy"]
    list_filter = ["campaign", "brand"]
    list_select_related = ["campaign", "brand"]
    date_hierarchy = "day"
