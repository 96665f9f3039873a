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


def _statement_cancelled() -> None:
    """A real PostgreSQL error of the kind an outage gives (OperationalError): the statement timeout fires."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")


def plain_db_down(request):
    _statement_cancelled()


class DrfDbDown(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request):
        _statement_cancelled()


urlpatterns = [
    path("api/v1/test-db-down-plain", plain_db_down),
    path("api/v1/test-db-down-drf", DrfDbDown.as_view()),
    path("api/v1/test-boom-plain", plain_boom),
    path("api/v1/test-boom-drf", DrfBoom.as_view()),
    *real,
]
