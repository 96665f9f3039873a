from miandan.api.routes import both_slashes

from . import api

urlpatterns = [
    *both_slashes("api/v1/auth/otp", api.OtpRequestApi, name="auth-otp"),
    *both_slashes("api/v1/auth/token", api.TokenCreateApi, name="auth-token"),
    *both_slashes("api/v1/me", api.MeApi, name="me"),
    *both_slashes("api/v1/auth/logout", api.LogoutApi, name="auth-logout"),
]
