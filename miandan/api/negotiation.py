"""Content negotiation with a short way for what the app sends (issue 14).

Every API view renders JSON only, and the app's `Accept` is absent, `*/*` or `application/json`. DRF's
DefaultContentNegotiation parses the header into media types and matches each against the renderers on every
request (~7 % of the campaign page in-process); for those three headers its answer is always the JSON
renderer with its own media type, which is what this returns directly. Any other header, a `?format=`, a
format suffix or a view with other renderers goes through DRF's negotiation unchanged (406 included).
"""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer

PLAIN_ACCEPTS = frozenset({"*/*", "application/json"})  # no header at all counts as */* (DRF's rule)


class AppNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        drf = self.settings  # DRF's api_settings (not Django's)
        if (format_suffix is None and len(renderers) == 1 and type(renderers[0]) is JSONRenderer
                and request.META.get("HTTP_ACCEPT", "*/*").strip() in PLAIN_ACCEPTS
                and drf.URL_FORMAT_OVERRIDE not in request.query_params):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
