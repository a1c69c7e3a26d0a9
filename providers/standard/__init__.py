"""Standard Webhooks: `webhook-id`/`webhook-timestamp`/`webhook-signature` (HMAC v1, ed25519 v1a)."""

from providers.standard.provider import scheme

__all__ = ["scheme"]
