"""docs/api.md and /api/schema/ describe the same API: every operation named in the doc is served, and
every app-facing operation served is named in the doc (both spellings of a slash answer, so paths are
compared without their trailing slash)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
NAMED = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)")
APP_FACING = ("/api/v1/", "/invite/")


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path).rstrip("/") or "/"


def _doc_operations() -> set[tuple[str, str]]:
    return {(m, _norm(p)) for m, p in NAMED.findall(DOC.read_text(encoding="utf-8")) if p.startswith(APP_FACING)}


@pytest.fixture
def schema_operations(api_client) -> set[tuple[str, str]]:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return {(method.upper(), _norm(path)) for path, ops in schema["paths"].items() for method in ops
            if method in {"get", "post", "put", "patch", "delete"} and path.startswith(APP_FACING)}


def test_the_doc_names_enough_to_be_the_contract():
    ops = _doc_operations()
    assert len(ops) >= 20, sorted(ops)
    assert ("POST", "/api/v1/orders/chat") in ops and ("GET", "/invite/{}/qr.png") in ops


def test_every_operation_in_the_doc_is_served(schema_operations):
    missing = _doc_operations() - schema_operations
    assert not missing, f"named in docs/api.md but not in /api/schema/: {sorted(missing)}"


def test_every_served_operation_is_in_the_doc(schema_operations):
    missing = schema_operations - _doc_operations()
    assert not missing, f"served (in /api/schema/) but not named in docs/api.md: {sorted(missing)}"
