from django.urls import path

from . import api, views

urlpatterns = [
    path("api/v1/campaigns/<slug:slug>/invite", api.InviteApi.as_view(), name="referral-invite"),
    path("api/v1/campaigns/<slug:slug>/referrals", api.ReferralsApi.as_view(), name="referral-list"),
    path("invite/<str:code>", views.InviteLandingView.as_view(), name="invite-landing"),
    path("invite/<str:code>/qr.png", views.InviteQrPngView.as_view(), name="invite-qr-png"),
    path("invite/<str:code>/qr.svg", views.InviteQrSvgView.as_view(), name="invite-qr-svg"),
]
