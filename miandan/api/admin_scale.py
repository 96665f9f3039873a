"""Admin changelists over tables with millions of rows (cards, orders, ledger, referrals).

Django's changelist costs, per page view, one COUNT(*) of the filtered rows (plus one of the whole table
unless `show_full_result_count = False`), a SELECT DISTINCT date_trunc(...) over every row for the date
hierarchy, and `icontains` searches that no B-tree index can serve. On a 5-million-row table each of those
is a full scan. `LargeTableAdminMixin` replaces them:

- counts: exact up to `EXACT_COUNT_UP_TO` rows (a bounded `SELECT count(*) FROM (... LIMIT n)`), above that
  the planner's estimate (`pg_class.reltuples` for the unfiltered table, the EXPLAIN row estimate for a
  filtered one); at most `MAX_PAGES` pages are offered, so no page is an OFFSET of millions;
- date hierarchy: the years/months/days offered come from MIN and MAX of the field (two index probes) and
  the range between them, instead of a DISTINCT over every row;
- search: each admin's `search_q(term)` returns a filter on indexed columns only (exact codes, phone
  prefixes through the phone index, ids); joined lookups are resolved to id lists first, so the final
  filter is an OR of index conditions PostgreSQL can combine (BitmapOr) instead of a join it must scan.
"""

from __future__ import annotations

import datetime as dt
import json

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, Q, QuerySet
from django.utils import timezone
from django.utils.functional import cached_property

EXACT_COUNT_UP_TO = 10_000
MAX_PAGES = 500


def estimated_count(qs: QuerySet) -> int | None:
    """The planner's row estimate for `qs` on PostgreSQL (None elsewhere)."""
    conn = connections[qs.db]
    if conn.vendor != "postgresql":
        return None
    if not qs.query.where:
        with conn.cursor() as cur:
            cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table])
            row = cur.fetchone()
        if row and row[0] >= 0:  # -1 before the table's first VACUUM/ANALYZE: ask the planner instead
            return int(row[0])
    plan = json.loads(qs.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Exact count while it is cheap, the planner's estimate above that; at most MAX_PAGES pages."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return super().count
        # Only the key in the bounded subquery: annotations (e.g. a per-row correlated count) are not computed.
        bounded = qs.order_by().values("pk")[: EXACT_COUNT_UP_TO + 1].count()
        if bounded <= EXACT_COUNT_UP_TO:
            return bounded
        estimate = estimated_count(qs)
        return max(bounded, estimate or 0)

    @cached_property
    def num_pages(self) -> int:
        return min(super().num_pages, MAX_PAGES)


def _truncate(value: dt.datetime, kind: str) -> dt.datetime:
    value = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("month", "year"):
        value = value.replace(day=1)
    if kind == "year":
        value = value.replace(month=1)
    return value


def _next(value: dt.datetime, kind: str) -> dt.datetime:
    if kind == "day":
        return value + dt.timedelta(days=1)
    if kind == "month":
        return value.replace(year=value.year + value.month // 12, month=value.month % 12 + 1)
    return value.replace(year=value.year + 1)


class RangeDatesMixin:
    """`datetimes()` / `dates()` for the admin's date hierarchy from MIN/MAX instead of DISTINCT over all rows.

    The bounds are those of the whole table (two probes of the field's index), clamped to the period the
    staff member drilled into; filters and searches do not narrow them, because MIN/MAX under a rare filter
    makes PostgreSQL walk the date index until it meets a matching row. Every period between the bounds is
    offered; one with no matching rows leads to an empty list, which is cheaper than proving it empty.
    """

    _dh_field: str | None = None
    _dh_window: tuple[dt.datetime, dt.datetime] | None = None  # the drilled-into period, [start, end)

    def _bounds(self, field_name: str):
        bounds = self.model._default_manager.aggregate(first=Min(field_name), last=Max(field_name))
        first, last = bounds["first"], bounds["last"]
        if first is None or self._dh_window is None or field_name != self._dh_field:
            return first, last
        start, end = self._dh_window
        first, last = max(first, start), min(last, end - dt.timedelta(microseconds=1))
        return (first, last) if first <= last else (None, None)

    def aggregate(self, *args, **kwargs):
        # The date hierarchy's own "first and last" question (Min/Max of its field only): answered from the bounds.
        fields = {getattr(e.source_expressions[0], "name", None) for e in kwargs.values()
                  if isinstance(e, (Min, Max)) and len(e.source_expressions) == 1}
        if self._dh_field and not args and kwargs and fields == {self._dh_field} and all(
                isinstance(e, (Min, Max)) for e in kwargs.values()):
            first, last = self._bounds(self._dh_field)
            return {k: (first if isinstance(e, Min) else last) for k, e in kwargs.items()}
        return super().aggregate(*args, **kwargs)

    def _range(self, field_name: str, kind: str, order: str, tzinfo, aware: bool) -> list:
        first, last = self._bounds(field_name)
        if first is None:
            return []
        tz = tzinfo or timezone.get_current_timezone()
        if aware:
            first, last = timezone.localtime(first, tz).replace(tzinfo=None), timezone.localtime(last, tz).replace(tzinfo=None)
        else:
            first = dt.datetime.combine(first, dt.time())
            last = dt.datetime.combine(last, dt.time())
        out, cur = [], _truncate(first, kind)
        while cur <= last:
            out.append(timezone.make_aware(cur, tz) if aware else cur.date())
            cur = _next(cur, kind)
        return out if order == "ASC" else out[::-1]

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        return self._range(field_name, kind, order, tzinfo, aware=timezone.is_aware(timezone.now()))

    def dates(self, field_name, kind, order="ASC"):
        if kind not in ("year", "month", "day"):
            return super().dates(field_name, kind, order)
        return self._range(field_name, kind, order, None, aware=False)


def _window(params, field: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The period the date hierarchy's year/month/day parameters select, in the current time zone."""
    try:
        year = int(params.get(f"{field}__year", ""))
    except ValueError:
        return None
    try:
        month = int(params.get(f"{field}__month", "0") or 0)
        day = int(params.get(f"{field}__day", "0") or 0)
        start = dt.datetime(year, month or 1, day or 1)
    except ValueError:
        return None
    end = _next(start, "day" if day else "month" if month else "year")
    tz = timezone.get_current_timezone()
    return timezone.make_aware(start, tz), timezone.make_aware(end, tz)


def with_range_dates(qs: QuerySet, field: str | None = None, params=None) -> QuerySet:
    """The same queryset, whose clones (filters, search, paging) answer the date hierarchy from MIN/MAX."""
    base = type(qs)
    if issubclass(base, RangeDatesMixin):
        base = base.__mro__[2]
    window = _window(params or {}, field) if field else None
    # A class per call carries this request's field and period through every clone the changelist makes.
    cls = type(f"RangeDates{base.__name__}", (RangeDatesMixin, base), {"_dh_field": field, "_dh_window": window})
    clone = qs._chain()
    clone.__class__ = cls
    return clone


PHONE_PREFIX_MIN = 4  # "1", "13" or "138" is a prefix of millions of phones: such a term searches ids only


def digits(term: str) -> bool:
    return term.isascii() and term.isdigit()


def phone_prefix(term: str) -> bool:
    return digits(term) and PHONE_PREFIX_MIN <= len(term) <= 11


def ids_or_none(values, limit: int = 1000) -> list[int]:
    """Resolve a lookup on another table to at most `limit` ids (the final filter stays on local indexes)."""
    return list(values[:limit])


class LargeTableAdminMixin:
    """For ModelAdmins over big tables: bounded counts, range date hierarchy, index-only search.

    Subclasses implement `search_q(request, term) -> Q | None` (None: the term matches nothing); the
    admin's `search_fields` stay declared so the search box shows, but are not used to build the query.
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def get_queryset(self, request):
        return with_range_dates(super().get_queryset(request), self.date_hierarchy, request.GET)

    def search_q(self, request, term: str) -> Q | None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def get_search_results(self, request, queryset, search_term):
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        q = self.search_q(request, term)
        if q is None:
            return queryset.none(), False
        return queryset.filter(q), False
