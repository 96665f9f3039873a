from django.urls import path

from . import api

urlpatterns = [
    path("api/v1/campaigns/<slug:slug>/join", api.CampaignJoinApi.as_view(), name="campaign-join"),
    path("api/v1/vouchers/", api.VoucherListApi.as_view(), name="voucher-list"),
    path("api/v1/vouchers/<str:code>/", api.VoucherDetailApi.as_view(), name="voucher-detail"),
]
