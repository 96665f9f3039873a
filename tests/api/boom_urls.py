"""The real URLconf plus two views that fail on purpose, to test the 500 handlers."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from miandan.urls import handler400, handler403, handler404, handler500  # noqa: F401
from miandan.urls import urlpatterns as real


def plain_boom(request):
    raise RuntimeError("boom")


class DrfBoom(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request):
        raise RuntimeError("boom")


urlpatterns = [
    path("api/v1/test-boom-plain", plain_boom),
    path("api/v1/test-boom-drf", DrfBoom.as_view()),
    *real,
]
