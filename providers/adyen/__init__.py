"""Adyen standard notifications (JSON): per-item `additionalData.hmacSignature` check (scheme), item ->
canonical facts (facts), sample notifications shaped like Adyen's published examples (samples)."""

from providers.adyen.provider import scheme

__all__ = ["scheme"]
