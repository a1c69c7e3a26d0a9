"""Paddle Billing: `Paddle-Signature` check (scheme), payload -> canonical facts (facts), sample events
shaped like Paddle's published webhook examples (samples)."""

from providers.paddle.provider import scheme

__all__ = ["scheme"]
