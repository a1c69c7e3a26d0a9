"""PayPal: PAYPAL-TRANSMISSION-SIG check against PayPal's certificate (provider, certificates),
payload -> canonical facts (facts), sample events shaped like PayPal's published ones (samples)."""

from providers.paypal.provider import scheme

__all__ = ["scheme"]
