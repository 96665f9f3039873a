"""OpenAPI generation tweaks shared by every app (drf-spectacular).

- Every API class nests its own `InputSerializer` / `OutputSerializer` (one class per operation),
  so plain class names collide in the schema. Nested serializers are named after their view
  instead: `TokenCreateApi.InputSerializer` -> component `TokenCreateApiInput`.
- The bearer token authentication is described as an HTTP bearer security scheme.
- A view routed with and without a trailing slash is documented once, as api.md spells it (`drop_slash_aliases`).
All three keep `manage.py check --deploy` (which runs drf-spectacular's schema check) free of warnings.
"""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from miandan.options import policy_for


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
    """Document each route once, under the spelling api.md uses.

    Every API route answers with and without its trailing slash (`miandan.api.routes.both_slashes`);
    the twin spelling is flagged on its view function (`schema_methods`: the methods documented under
    that spelling, None for all), so it does not show up as a second, colliding operation.
    """
    kept = []
    for path, regex, method, callback in endpoints:
        methods = getattr(callback, "schema_methods", None)
        if methods is not None and method.upper() not in methods:
            continue
        kept.append((path, regex, method, callback))
    return kept


# --- error responses (api.md) ---------------------------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {
        "code": {"type": "string", "description": "machine code, part of the contract"},
        "detail": {"type": "string", "description": "human message (Chinese)"},
        "fields": {"type": "object", "additionalProperties": True, "description": "per-field errors (400 invalid)"},
        "suggestions": {"type": "array", "items": {"type": "string"}, "description": "422 not_understood"},
        "retry_after": {"type": "integer", "description": "seconds, with 429/503 and 409 budget_paced / daily_cap_reached"},
    },
}

# Domain codes per operation, as api.md lists them (generic ones are added by rule below).
DOMAIN_CODES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("post", "/api/v1/auth/token"): {"400": ["otp_invalid"], "429": ["rate_limited"]},
    ("post", "/api/v1/campaigns/{slug}/join"): {
        "403": ["app_upgrade_required"],
        "409": ["campaign_not_live", "budget_exhausted", "card_limit_reached", "budget_paced", "daily_cap_reached"],
    },
    ("post", "/api/v1/campaigns/{slug}/referrals"): {
        "202": ["under_review"],
        "404": ["invalid_code"],
        "409": ["self_referral", "already_referred", "referral_cycle", "campaign_not_live"],
    },
    # A named campaign that does not exist is 404 not_found; one not live is 409 (found by contract fuzzing).
    ("post", "/api/v1/orders/chat"): {"404": ["not_found"],
                                      "409": ["no_store_available", "no_voucher", "campaign_not_live", "store_cap_reached"],
                                      "422": ["not_understood"]},
    ("post", "/api/v1/orders"): {"404": ["not_found"],
                                 "409": ["no_store_available", "no_voucher", "campaign_not_live", "store_cap_reached"]},
    ("post", "/api/v1/orders/{order_id}/cancel"): {"409": ["cannot_cancel"]},
    ("post", "/api/v1/merchants/{merchant}/events"): {
        "401": ["bad_signature", "stale_event"],
        "404": ["unknown_order"],
        "409": ["event_id_reused"],
    },
}
IDEMPOTENT_POSTS = {
    "/api/v1/campaigns/{slug}/join", "/api/v1/campaigns/{slug}/referrals", "/api/v1/orders/chat", "/api/v1/orders",
}


IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "description": "幂等键（IETF httpapi idempotency-key 草案）：同一调用者内唯一。相同键、相同接口与请求体的重试返回原始"
                   "响应（`Idempotent-Replayed: true`）；相同键用于不同请求为 422 `idempotency_key_reused`；首个请求仍在"
                   "处理时为 409 `idempotency_in_progress`。保存 24 小时。",
}


def _add(responses: dict, status: str, codes: list[str]) -> None:
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    entry = responses.setdefault(status, {"description": ""})
    known = entry.get("description", "")
    missing = [c for c in codes if c not in known]
    if missing:
        entry["description"] = "；".join(filter(None, [known, "、".join(missing)]))
    entry.setdefault("content", ref)


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation lists the error statuses and codes it can answer."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", ERROR_SCHEMA)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            # Answered by gunicorn (limit_request_line) before the app sees the request, so in its own plain
            # body, not the error shape (found by contract fuzzing: a query string of 6 KiB).
            responses.setdefault("414", {"description": "URI Too Long：请求行超过 4094 字节，由 Web 服务器直接拒绝"
                                                        "（非 JSON 错误体）"})
            if not path.startswith("/api/"):
                continue
            if any("bearerAuth" in scheme for scheme in operation.get("security", [])) and \
                    not any(scheme == {} for scheme in operation.get("security", [])):
                _add(responses, "401", ["not_authenticated"])
            if "{" in path:
                _add(responses, "404", ["not_found"])
            if method == "post" or any(p.get("in") == "query" for p in operation.get("parameters", [])):
                _add(responses, "400", ["invalid"])
            if method == "post":
                _add(responses, "413", ["payload_too_large"])
            # Any operation that reads the database: unreachable for a moment (failover, network) -> 503 busy.
            _add(responses, "503", ["busy"])
            if method == "post" and path in IDEMPOTENT_POSTS:
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in parameters):
                    parameters.append(IDEMPOTENCY_KEY_PARAMETER)
                _add(responses, "409", ["idempotency_in_progress"])
                _add(responses, "422", ["idempotency_key_reused"])
            for status, codes in DOMAIN_CODES.get((method, path), {}).items():
                _add(responses, status, codes)
    return result


def document_guard_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: add 429 / 503 (busy, paused) to every guarded operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("GuardError", {
        "type": "object",
        "required": ["code", "detail"],
        "properties": {
            "code": {"type": "string", "enum": ["rate_limited", "busy", "paused"]},
            "detail": {"type": "string"},
            "retry_after": {"type": "integer", "description": "seconds, same as the Retry-After header"},
        },
    })
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/GuardError"}}}
    retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}
    for path, operations in result.get("paths", {}).items():
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            policy = policy_for(url_name=None, path=concrete, method=method.upper())
            if policy is None:
                continue
            responses = operation["responses"]
            if policy.limits:
                responses.setdefault("429", {"description": "rate_limited：操作太频繁（按用户与 IP 限流）",
                                             "content": ref, "headers": retry})
            reasons = []
            if policy.shed:
                reasons.append("busy：活动太火爆，已限流降级")
            if policy.switch:
                reasons.append("paused：该功能被运营暂停")
            if policy.redis_down == "closed":
                reasons.append("busy：限流服务不可用时拒绝发送")
            if reasons:
                existing = responses.get("503", {})
                description = "；".join(filter(None, [existing.get("description", ""), *reasons]))
                responses["503"] = {**existing, "description": description, "content": ref, "headers": retry}
    return result


# --- links between operations (OpenAPI 3 `links`) ----------------------------------------------------

# (method, path, status) -> {link name: link}. What a client does next with what it got: find a campaign,
# join it, look at the card, order with it, look at / cancel the order; share an invite, accept it. Clients
# read them as documentation; a stateful contract fuzzer (schemathesis, tests/api/test_fuzz.py) follows
# them, so its call sequences chain real campaigns, cards and orders instead of guessing ids.
_ORDER_TEXT = {"text": "一杯伯牙绝弦", "lat": 30.2741, "lng": 120.1551}  # the demo catalogue's centre (Hangzhou)
_CAMPAIGN_NEXT = {
    "GetCampaign": ("api_v1_campaigns_retrieve", {"slug": "{slug}"}, None),
    "JoinCampaign": ("api_v1_campaigns_join_create", {"slug": "{slug}"}, None),
    "GetInvite": ("api_v1_campaigns_invite_retrieve", {"slug": "{slug}"}, None),
    "ListReferrals": ("api_v1_campaigns_referrals_retrieve", {"slug": "{slug}"}, None),
}
_CARD_NEXT = {
    "GetCard": ("api_v1_vouchers_retrieve", {"code": "$response.body#/code"}, None),
    "OrderWithCard": ("api_v1_orders_chat_create", {}, {**_ORDER_TEXT, "campaign": "$response.body#/campaign"}),
}
_ORDER_NEXT = {
    "GetOrder": ("api_v1_orders_retrieve", {"order_id": "$response.body#/id"}, None),
    "CancelOrder": ("api_v1_orders_cancel_create", {"order_id": "$response.body#/id"}, None),
}


def _campaign(pointer: str) -> dict:
    return {name: (op, {k: v.replace("{slug}", pointer) for k, v in params.items()}, body)
            for name, (op, params, body) in _CAMPAIGN_NEXT.items()}


LINKS: dict[tuple[str, str, str], dict] = {
    ("get", "/api/v1/campaigns/", "200"): _campaign("$response.body#/0/slug"),
    ("get", "/api/v1/campaigns/{slug}/", "200"): _campaign("$response.body#/slug"),
    ("post", "/api/v1/campaigns/{slug}/join", "201"): _CARD_NEXT,
    ("post", "/api/v1/campaigns/{slug}/join", "200"): _CARD_NEXT,
    ("get", "/api/v1/vouchers/{code}/", "200"): _CARD_NEXT,
    ("post", "/api/v1/orders/chat", "201"): _ORDER_NEXT,
    ("post", "/api/v1/orders", "201"): _ORDER_NEXT,
    ("get", "/api/v1/orders/{order_id}", "200"): {"CancelOrder": _ORDER_NEXT["CancelOrder"]},
    ("get", "/api/v1/campaigns/{slug}/invite", "200"): {
        "AcceptReferral": ("api_v1_campaigns_referrals_create", {"slug": "$request.path.slug"},
                           {"code": "$response.body#/code"}),
        "InvitePage": ("invite_retrieve", {"code": "$response.body#/code"}, None),
    },
}


def document_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: add LINKS to the responses they start from (skipped if absent)."""
    operation_ids = {op.get("operationId") for ops in result.get("paths", {}).values() for op in ops.values()
                     if isinstance(op, dict)}
    for (method, path, status), links in LINKS.items():
        response = result.get("paths", {}).get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        out = response.setdefault("links", {})
        for name, (operation_id, parameters, body) in links.items():
            if operation_id not in operation_ids:
                continue
            link: dict = {"operationId": operation_id}
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                link["requestBody"] = body
            out[name] = link
    return result


def document_operations_endpoints(result, generator, request, public):
    """drf-spectacular postprocessing hook: /healthz, /readyz and /metrics are plain Django views (no DRF, so the
    probes stay cheap), which the generator does not see; api.md says the schema describes all of the API."""
    paths = result.setdefault("paths", {})
    paths.setdefault("/healthz", {"get": {
        "operationId": "healthz", "tags": ["operations"], "security": [{}],
        "summary": "Liveness: 200 while the process lives (touches no dependency)",
        "responses": {"200": {"description": "进程存活", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}, "required": ["status"]}}}}},
    }})
    readiness = {"type": "object", "required": ["status", "checks", "failed"], "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string",
                                                             "enum": ["ok", "error", "timeout", "skipped"]}},
        "failed": {"type": "array", "items": {"type": "string"}},
        "elapsed_ms": {"type": "number"},
        "code": {"type": "string", "enum": ["not_ready"]}, "detail": {"type": "string"}}}
    paths.setdefault("/readyz", {"get": {
        "operationId": "readyz", "tags": ["operations"], "security": [{}],
        "summary": "Readiness: 200 only when the database, Redis and the Celery broker answer",
        "responses": {
            "200": {"description": "依赖服务全部可用", "content": {"application/json": {"schema": readiness}}},
            "503": {"description": "`not_ready`：依赖服务不可用（`failed` 只列名称）",
                    "content": {"application/json": {"schema": readiness}}}},
    }})
    paths.setdefault("/metrics", {"get": {
        "operationId": "metrics", "tags": ["operations"], "security": [{"bearerAuth": []}, {}],
        "summary": "Prometheus metrics: with the bearer MIANDAN_METRICS_TOKEN or from MIANDAN_METRICS_ALLOWED_NETS",
        "responses": {
            "200": {"description": "Prometheus 文本格式", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "404": {"description": "`not_found`：没有令牌且不在允许的网段（不暴露其存在）",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }})
    return result
