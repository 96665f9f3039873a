"""OpenAPI generation tweaks shared by every app (drf-spectacular).

- Every API class nests its own `InputSerializer` / `OutputSerializer` (one class per operation),
  so plain class names collide in the schema. Nested serializers are named after their view
  instead: `TokenCreateApi.InputSerializer` -> component `TokenCreateApiInput`.
- The bearer token authentication is described as an HTTP bearer security scheme.
Both keep `manage.py check --deploy` (which runs drf-spectacular's schema check) free of warnings.
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
