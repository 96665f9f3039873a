from django.urls import path

from miandan.api.routes import both_slashes

from . import api, views

urlpatterns = [
    *both_slashes("api/v1/campaigns/<slug:slug>/invite", api.InviteApi, name="referral-invite"),
    *both_slashes("api/v1/campaigns/<slug:slug>/referrals", api.ReferralsApi, name="referral-list"),
    *both_slashes("invite/<str:code>", views.InviteLandingView, name="invite-landing"),
    path("invite/<str:code>/qr.png", views.InviteQrPngView.as_view(), name="invite-qr-png"),
    path("invite/<str:code>/qr.svg", views.InviteQrSvgView.as_view(), name="invite-qr-svg"),
]
