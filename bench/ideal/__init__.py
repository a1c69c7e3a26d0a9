"""The ideal hot path the ingestion benchmark compares payhook with (never part of the service).

Run only by bench/ingest.py, under the same gunicorn config and the same Django settings as payhook
but no middleware (issue 13's ideal: plain Django; `--ideal-middleware payhook` restores payhook's
list); ROOT_URLCONF differs (see settings.py), so the production URLconf can never reach it.
"""
