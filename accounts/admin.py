"""Staff screens for users, devices, one-time codes and login tokens."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.models import Group

from miandan.api.admin import ReadOnlyAdminMixin

from .models import AuthToken, Device, OtpCode, User
from .services import token_revoke

# The groups keep their stable machine names (code and data migrations refer to them); staff read these.
GROUP_LABELS = {"marketing": "市场运营", "finance": "财务", "support": "客服"}


def group_label(group: Group) -> str:
    label = GROUP_LABELS.get(group.name)
    return f"{label}（{group.name}）" if label else group.name


class GroupChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return group_label(obj)


class GroupFilter(admin.SimpleListFilter):
    title = "角色（组）"
    parameter_name = "group"

    def lookups(self, request, model_admin):
        return [(g.pk, group_label(g)) for g in Group.objects.order_by("name")]

    def queryset(self, request, queryset):
        return queryset.filter(groups__pk=self.value()) if self.value() else queryset


class DeviceInline(admin.TabularInline):
    model = Device
    extra = 0
    can_delete = False
    fields = ("device_id", "app_version", "last_ip", "first_seen", "last_seen")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class UserCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("username", "phone")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    add_form = UserCreationForm
    list_display = ("username", "phone", "roles", "is_staff", "is_active", "joined_app_version", "date_joined",
                    "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", GroupFilter)
    search_fields = ("phone", "username", "first_name", "last_name", "email")
    ordering = ("-id",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("手机与 App", {"fields": ("phone", "joined_app_version")}),
        ("个人信息", {"fields": ("first_name", "last_name", "email")}),
        ("权限", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("时间", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "phone", "usable_password", "password1", "password2")}),
    )
    readonly_fields = ("joined_app_version", "last_login", "date_joined")
    inlines = [DeviceInline]
    show_full_result_count = False  # millions of app users: skip the extra COUNT(*)

    @admin.display(description="角色")
    def roles(self, obj):
        return "、".join(group_label(g) for g in obj.groups.all()) or "-"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups":
            kwargs.setdefault("queryset", Group.objects.order_by("name"))
            kwargs["form_class"] = GroupChoiceField
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # Someone who may only look (support) gets no password row: its "设置密码" button would lead to a 403;
        # roles read in Chinese, and the raw permission list says nothing to them.
        swap = {"groups": "roles"}
        return [(name, {**opts, "fields": tuple(swap.get(f, f) for f in opts["fields"]
                                                if f not in ("password", "user_permissions"))})
                for name, opts in fieldsets]


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    list_display = ("label", "name", "members")

    @admin.display(description="角色", ordering="name")
    def label(self, obj):
        return GROUP_LABELS.get(obj.name, obj.name)

    @admin.display(description="成员数")
    def members(self, obj):
        return obj.user_set.count()


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Devices are recorded by logins; staff read them when chasing abuse (one device, many accounts)."""

    list_display = ("device_id", "user", "app_version", "last_ip", "first_seen", "last_seen")
    list_filter = ("app_version",)
    search_fields = ("device_id", "user__phone", "=last_ip")
    list_select_related = ("user",)
    date_hierarchy = "first_seen"
    show_full_result_count = False


@admin.register(OtpCode)
class OtpCodeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("phone", "created_at", "expires_at", "attempts", "used_at", "request_ip")
    list_filter = ("used_at",)
    search_fields = ("=phone", "=request_ip")
    date_hierarchy = "created_at"
    # Never show the code hash: it is the only thing standing between a leaked screen and a login.
    fields = ("phone", "created_at", "expires_at", "attempts", "used_at", "request_ip")
    show_full_result_count = False


class TokenStateFilter(admin.SimpleListFilter):
    title = "状态"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "有效"), ("revoked", "已吊销"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(AuthToken)
class AuthTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "user", "device_id", "created_at", "last_used_at", "revoked_at")
    list_filter = (TokenStateFilter,)
    search_fields = ("user__phone", "user__username", "device_id")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    # Only the hash is stored, and even that stays off screen.
    fields = ("user", "device_id", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]
    show_full_result_count = False

    def has_revoke_permission(self, request):
        # Revoking is a change to the token, so it needs the model's change permission.
        return request.user.has_perm("accounts.change_authtoken")

    @admin.action(description="吊销所选令牌（用户需重新登录）", permissions=["revoke"])
    def revoke(self, request, queryset):
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            token_revoke(token=token)
        self.message_user(request, f"已吊销 {len(tokens)} 个令牌。", messages.SUCCESS)
