"""payhook's own settings with the benchmark's URLconf and, by default, NO middleware: the ideal of
issue 13 is plain Django + HMAC verify + json.loads + one INSERT … ON CONFLICT. Same database,
logging and everything else as payhook.

BENCH_IDEAL_MIDDLEWARE=payhook (bench/ingest.py --ideal-middleware payhook) keeps payhook's whole
middleware list instead: the ideal the benchmark used before issue 13, for comparing old figures.
"""

import os

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.ideal.urls"
WSGI_APPLICATION = "bench.ideal.wsgi.application"
if os.environ.get("BENCH_IDEAL_MIDDLEWARE", "none") != "payhook":
    MIDDLEWARE = []
