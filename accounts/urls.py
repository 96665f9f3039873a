from django.urls import path

from . import api

urlpatterns = [
    path("api/v1/auth/otp", api.OtpRequestApi.as_view(), name="auth-otp"),
    path("api/v1/auth/token", api.TokenCreateApi.as_view(), name="auth-token"),
    path("api/v1/me", api.MeApi.as_view(), name="me"),
    path("api/v1/auth/logout", api.LogoutApi.as_view(), name="auth-logout"),
]
