from miandan.api.routes import both_slashes

from . import api

urlpatterns = [
    *both_slashes("api/v1/campaigns/<slug:slug>/join", api.CampaignJoinApi, name="campaign-join"),
    *both_slashes("api/v1/vouchers/", api.VoucherListApi, name="voucher-list"),
    *both_slashes("api/v1/vouchers/<str:code>/", api.VoucherDetailApi, name="voucher-detail"),
]
