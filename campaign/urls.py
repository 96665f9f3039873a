from miandan.api.routes import both_slashes

from . import api

urlpatterns = [
    *both_slashes("api/v1/campaigns/", api.CampaignListApi, name="campaign-list"),
    *both_slashes("api/v1/campaigns/<slug:slug>/", api.CampaignDetailApi, name="campaign-detail"),
]
