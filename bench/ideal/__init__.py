"""The ideal hot path the ingestion benchmark compares payhook with (never part of the service).

Run only by bench/ingest.py, under the same gunicorn config and the same Django settings and
middleware as payhook; only ROOT_URLCONF differs (see settings.py), so the production URLconf can
never reach it.
"""
