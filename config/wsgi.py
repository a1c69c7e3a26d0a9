import os

import django

from config.handlers import application_build
from config.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# get_wsgi_application(), with tracing turned on (if configured) between the apps loading and the
# handlers building their middleware chains, which must include the tracing middleware. Each gunicorn
# worker imports this after its fork, so each has its own exporter thread. /webhooks/ requests get
# their own, lean chain (config/handlers.py).
django.setup(set_prefix=False)
tracing_init()

application = application_build()
