"""Lemon Squeezy: `X-Signature` check (scheme), payload -> canonical facts (facts), sample events
shaped like Lemon Squeezy's published examples (samples)."""

from providers.lemonsqueezy.provider import scheme

__all__ = ["scheme"]
