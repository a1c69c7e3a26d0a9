"""Moved to config/metrics.py (every layer observes metrics); these names stay for their importers."""

from config.metrics import events_received, refused, signature_failures  # noqa: F401
