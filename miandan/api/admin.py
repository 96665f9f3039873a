"""Admin for the cross-cutting API tables, plus a read-only base other admins reuse."""

from django.contrib import admin

from .models import IdempotencyRecord

# The staff console is a product for marketing, finance and support, not "Django 管理".
admin.site.site_header = "免单运营后台"
admin.site.site_title = "免单运营后台"
admin.site.index_title = "运营概览"
admin.site.site_url = "/"  # "查看站点": the demo's home page
# The app list sidebar costs ~300 px on every list page; at 1366 px the lists need it (the index and the
# breadcrumbs lead everywhere the sidebar did).
admin.site.enable_nav_sidebar = False


class ReadOnlyAdminMixin:
    """Staff may look, never write: these rows are written only by services (or are evidence).

    Change pages still open (as Django's read-only "view" page) for anyone with the view permission.
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("key_display", "scope_display", "user", "status_display", "created_at", "completed_at")
    list_filter = ("status_code", "scope")
    search_fields = ("key", "user__phone", "user__username")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    # The fingerprint is a hash of the request body: useless to a person, so it stays off the list.
    fields = ("user", "scope", "key", "fingerprint", "status_code", "response_body", "created_at", "completed_at")
    show_full_result_count = False  # a COUNT(*) over a busy table on every page view is not worth it

    # The model's fields carry English names; the columns staff read are labelled here.
    @admin.display(description="幂等键", ordering="key")
    def key_display(self, obj):
        return obj.key

    @admin.display(description="接口", ordering="scope")
    def scope_display(self, obj):
        return obj.scope

    @admin.display(description="响应状态码", ordering="status_code")
    def status_display(self, obj):
        return obj.status_code if obj.status_code is not None else "处理中"
