"""payhook's own settings, with the benchmark's URLconf: same middleware, database and logging."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.ideal.urls"
WSGI_APPLICATION = "bench.ideal.wsgi.application"
