"""Stripe: `Stripe-Signature` check (scheme), payload -> canonical facts (facts), sample events built
on Stripe's published objects (samples)."""

from providers.stripe.provider import scheme

__all__ = ["scheme"]
