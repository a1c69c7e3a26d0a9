from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """An API key (`Authorization: Token <key>`), stored as its SHA-256 digest only: the key is shown
    once, by `manage.py drf_create_token`, and cannot be read back. `prefix` (the key's first
    characters) is what the admin and the owner use to tell tokens apart."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=12)
    # A key carries 160 random bits, so an unsalted digest is safe to index and look up directly.
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}…"
