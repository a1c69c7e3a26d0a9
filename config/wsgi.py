import os

import django
from django.core.handlers.wsgi import WSGIHandler

from config.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# get_wsgi_application(), with tracing turned on (if configured) between the apps loading and the
# handler building its middleware chain, which must include the tracing middleware. Each gunicorn
# worker imports this after its fork, so each has its own exporter thread.
django.setup(set_prefix=False)
tracing_init()
application = WSGIHandler()
