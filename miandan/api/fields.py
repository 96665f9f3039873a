"""Serializer fields that take JSON types literally.

DRF's CharField turns 123 into "123"; the API contract says these fields are strings, and a
client sending a number has a bug we want to hear about (400 `invalid`), not hide.
"""

from __future__ import annotations

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "必须是字符串"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
