"""OpenAPI generation tweaks shared by every app (drf-spectacular).

- Every API class nests its own `InputSerializer` / `OutputSerializer` (one class per operation),
  so plain class names collide in the schema. Nested serializers are named after their view
  instead: `TokenCreateApi.InputSerializer` -> component `TokenCreateApiInput`.
- The bearer token authentication is described as an HTTP bearer security scheme.
- A view routed with and without a trailing slash is documented once (`drop_slash_aliases`).
All three keep `manage.py check --deploy` (which runs drf-spectacular's schema check) free of warnings.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer, direction):
        cls = serializer.__class__
        qualname = cls.__qualname__
        if "." in qualname and "<locals>" not in qualname:
            return qualname.replace(".", "")
        return super().get_serializer_name(serializer, direction)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>（登录接口返回的令牌）"}


def drop_slash_aliases(endpoints, **kwargs):
    """Document a view once when it is routed both with and without a trailing slash.

    Apps accept `/orders/1` and `/orders/1/` for the same view (clients differ); the schema
    keeps the spelling api.md uses (no slash) instead of two colliding operation ids.
    """
    seen = {(path, method, getattr(callback, "cls", callback)) for path, _, method, callback in endpoints}
    kept = []
    for path, regex, method, callback in endpoints:
        view = getattr(callback, "cls", callback)
        if path.endswith("/") and path != "/" and (path.rstrip("/"), method, view) in seen:
            continue
        kept.append((path, regex, method, callback))
    return kept
