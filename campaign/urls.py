from django.urls import path

from . import api

urlpatterns = [
    path("api/v1/campaigns/", api.CampaignListApi.as_view(), name="campaign-list"),
    path("api/v1/campaigns/<slug:slug>/", api.CampaignDetailApi.as_view(), name="campaign-detail"),
]
