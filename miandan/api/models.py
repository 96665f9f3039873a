from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """A caller's Idempotency-Key with the request fingerprint and, once done, the response."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    scope = models.CharField(max_length=128)  # "caller": keys are caller-wide; the endpoint is in the fingerprint
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # The rendered JSON text, not jsonb: jsonb reorders keys, and a replay must be the original body.
    response_body = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "幂等键"
        verbose_name_plural = "幂等键"
        constraints = [models.UniqueConstraint(fields=["user", "scope", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"
