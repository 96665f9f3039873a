"""One trailing-slash rule for the whole API: every route answers with and without the slash.

api.md spells some paths with a trailing slash (`/api/v1/vouchers/`) and some without
(`/api/v1/orders/chat`); clients (and people typing curl) get it wrong both ways. Redirects do
not help a POST (Django's APPEND_SLASH cannot redirect one, and a 301 turns it into a GET), so
each route is registered under both spellings, pointing at the same view:

- the spelling api.md uses is the canonical one: it is the one `reverse()` returns and the one
  /api/schema/ documents;
- the other spelling is an alias with the same URL name, so the guard (which matches routes by
  name) protects both, and the schema leaves it out (`miandan.api.schema.drop_slash_aliases`).

`tests/api/test_trailing_slash.py` checks that every /api/ route has its twin.
"""

from __future__ import annotations

from django.urls import URLPattern, path


def _flag(view, methods: frozenset[str] | None):
    # Which HTTP methods the schema documents under this spelling (None: all of them).
    view.schema_methods = methods
    return view


def both_slashes(route: str, view_cls, *, name: str, methods: set[str] | None = None,
                 alias_methods: set[str] | None = None, **initkwargs) -> list[URLPattern]:
    """`route` (the api.md spelling) and its twin with/without the trailing slash, same view, same name.

    `methods` / `alias_methods` say which methods the schema documents under each spelling; by default
    all under `route` and none under the twin. (Used where api.md itself spells one path two ways:
    `POST /api/v1/orders` and `GET /api/v1/orders/`.)
    """
    twin = route[:-1] if route.endswith("/") else route + "/"
    canonical = _flag(view_cls.as_view(**initkwargs), frozenset(methods) if methods else None)
    alias = _flag(view_cls.as_view(**initkwargs), frozenset(alias_methods or ()))
    # Alias first: with two patterns under one name, reverse() returns the one registered last.
    return [path(twin, alias, name=name), path(route, canonical, name=name)]
