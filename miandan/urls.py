from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from miandan.api import handlers

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("miandan.api.urls")),
    path("", include("accounts.urls")),
    path("", include("campaign.urls")),
    path("", include("vouchers.urls")),
    path("", include("referrals.urls")),
    path("", include("orders.urls")),
    path("", include("reports.urls")),
    path("", include("web.urls")),
]

handler400 = handlers.bad_request
handler403 = handlers.permission_denied
handler404 = handlers.not_found
handler500 = handlers.server_error
