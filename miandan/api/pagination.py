from django.core.paginator import Page
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination

from miandan.api.errors import InvalidInput


class Pagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        """Page 1 in one query when it is not full (most users hold a few cards and orders): the rows are the count.

        A full first page, or any other page, takes the usual COUNT + slice.
        """
        page_size = self.get_page_size(request)
        if page_size and request.query_params.get(self.page_query_param, "1") == "1":
            rows = list(queryset[:page_size])
            if len(rows) < page_size:
                paginator = self.django_paginator_class(queryset, page_size)
                paginator.__dict__["count"] = len(rows)  # Paginator.count is a cached_property
                self.page = Page(rows, 1, paginator)
                self.request = request
                return rows
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            # DRF answers a bad page number (0, -1, "x", past the last page) with a 404 the contract does not
            # list for a list endpoint (found by contract fuzzing): it is malformed input, 400 `invalid`.
            raise InvalidInput("页码无效", extra={"fields": {"page": ["页码须为从 1 开始且不超过总页数的整数"]}}) from None


def paginated(item_serializer: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of `Pagination.get_paginated_response` around `item_serializer` (for @extend_schema)."""
    return inline_serializer(
        name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item_serializer(many=True),
        },
    )
