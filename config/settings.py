"""payhook settings: one module, configured by environment variables only.

Every variable is listed with its default in `.env.example`. Environments differ only in their
environment; tests override single values with pytest's `settings` fixture.
"""

from datetime import timedelta
from pathlib import Path

import environ

from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# `make run` writes a .env with generated development keys on first start; production sets real
# environment variables instead, which always win over the file. The test suite turns it off, so a
# developer's .env never leaks into a test run.
if env.bool("PAYHOOK_READ_DOTENV", default=True) and (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"), overwrite=False)
# Everything the embedded default writes (SQLite file, broker folders, beat schedule, mail, static
# files): one directory, so a test can run the whole `make run` configuration in a temporary one.
VAR_DIR = BASE_DIR / env.str("PAYHOOK_VAR_DIR", default="var")  # relative to the checkout, or absolute

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- Transport security -----------------------------------------------------------------------
# Defaults serve plain HTTP, because that is what `make run`, the tests and the benchmarks speak
# on 127.0.0.1 (and a webhook POST cannot follow a redirect to https). Production terminates TLS
# in the proxy (deploy/Caddyfile) and docker-compose.yml sets DJANGO_BEHIND_TLS_PROXY=true, which
# turns on the redirect and secure cookies. A deployment that forgets it does not run insecure
# quietly: `manage.py check --deploy` fails, and compose runs that check before anything starts.
BEHIND_TLS_PROXY = env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    # Believe X-Forwarded-Proto. Only sound because our proxy sets that header itself on every
    # request and gunicorn is reachable only through it (compose `expose`, never `ports`): a
    # client that could reach gunicorn directly could claim https.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=BEHIND_TLS_PROXY)
# Probes and scrapes come over plain HTTP on the internal network, never through the proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=BEHIND_TLS_PROXY)
# HSTS is only ever sent on https responses, so it is on by default without hurting plain HTTP.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a months-long commitment for the whole registrable domain: the operator's call.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]  # "SECURE_HSTS_PRELOAD is not True": deliberate, see above
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "anymail",
    "webhooks",
    "fulfillment",
    "notifications",
    "audit",
    "accounts",  # hashed API tokens (and the drf_create_token command), API throttles, admin lockout
    "support",  # customer lookup (API and admin page): reads every app, the top layer
]

MIDDLEWARE = [
    # Outermost: every /api/ answer (errors too) leaves with Cache-Control: no-store.
    "config.cache_control.ApiNoStoreMiddleware",
    "config.errors.JsonErrorMiddleware",  # outermost: sees every answer, even Django's own error pages
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS and JS) from the web process itself, in every mode.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# What a provider's POST to /webhooks/<slug>/ goes through instead (config/handlers.py), a subset of
# MIDDLEWARE kept in its order (plus the tracing middleware when tracing is on). Kept: JSON for every
# error answer (the contract); the security middleware (the HTTPS redirect behind the TLS proxy and
# the hardening headers, a few header writes); CommonMiddleware, which validates the Host header
# against ALLOWED_HOSTS (a bad one is a JSON 400) and sets Content-Length. Left out: sessions, CSRF
# (the view is csrf_exempt: the signature authenticates), users, messages, static files, frame
# options and django-axes, none of which a webhook uses.
WEBHOOK_MIDDLEWARE = [
    "config.errors.JsonErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

# Admin logins go through django-axes first: past AXES_FAILURE_LIMIT wrong passwords for one
# username from one address, that pair is refused (even with the right password) for the cool-off.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # failures are what the lockout needs; no row per successful login
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.lockout_client_ip"
AXES_CLIENT_STR_CALLABLE = "accounts.lockout.lockout_client_str"
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Admin templates shared by every app (the action-with-a-note page).
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'payhook.sqlite3'}")}
# Persistent connections keep the webhook hot path to one round trip per statement; health checks
# stop a connection the database dropped from failing the next request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
else:
    # SQLite serves the embedded default: web, worker and beat share one file, so wait for locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing one; collectstatic is optional
# Served straight from the apps' static folders, so no path (make run, tests, the image) needs
# collectstatic first; `collectstatic` into STATIC_ROOT still works and is served too.
WHITENOISE_USE_FINDERS = True

# --- Encryption at rest ---------------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt. Rotation: prepend a new key, run
# `manage.py rotate_encryption_keys`, then drop the old key (docs/operations.md).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS")
# Key of the keyed hash (HMAC blind index) used to search identifiers that are never stored in clear.
BLIND_INDEX_KEY = env.str("BLIND_INDEX_KEY")
# Earlier blind-index keys: audit searches still find entries hashed under them (docs/audit.md).
BLIND_INDEX_PREVIOUS_KEYS = env.list("BLIND_INDEX_PREVIOUS_KEYS", default=[])

# --- Audit chain ------------------------------------------------------------------------------
# Keys the audit hash chain (HMAC-SHA256). Environment only, never in the database: whoever can
# write the audit tables without it cannot forge a chain that verifies. It must not change (docs/audit.md).
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY")
# The chain head (id, hash, count) is logged and every shard head anchored this often, so a later rewrite
# or a shard cut short can be proven against it.
AUDIT_HEAD_PUBLISH_INTERVAL_SECONDS = env.float("AUDIT_HEAD_PUBLISH_INTERVAL_SECONDS", default=300.0)
# Independent chains (shards) the audit log appends to, so concurrent transactions do not wait on one
# lock. `migrate` creates the missing heads; a smaller number later never removes any (docs/audit.md).
AUDIT_CHAIN_SHARDS = env.int("AUDIT_CHAIN_SHARDS", default=16)
# The role web, worker and beat connect as: migrations leave it only SELECT/INSERT on the audit log.
DATABASE_APP_ROLE = env.str("DATABASE_APP_ROLE", default="payhook_app")

# --- Webhooks ---------------------------------------------------------------------------------
WEBHOOK_TOLERANCE_SECONDS = env.int("WEBHOOK_TOLERANCE_SECONDS", default=300)
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(WEBHOOK_MAX_BODY_BYTES + 1, 2_621_440)
# The outbox relay re-dispatches stored events that are still `received` after this many seconds.
WEBHOOK_REDISPATCH_AFTER_SECONDS = env.int("WEBHOOK_REDISPATCH_AFTER_SECONDS", default=30)
# An unleased event whose message was published this long ago is taken as lost by the broker.
WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS = env.int("WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS", default=600)
# A worker leases the events it works on for this long and renews the lease while working; a dead
# worker's events are republished by the sweep once it lapses (lease + one sweep interval).
WEBHOOK_LEASE_SECONDS = env.int("WEBHOOK_LEASE_SECONDS", default=30)
# A poison event (one that kills its worker every time) is dead-lettered after this many attempts.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=5)
WEBHOOK_DISPATCH_BATCH_SIZE = env.int("WEBHOOK_DISPATCH_BATCH_SIZE", default=20)
# A message with at least this many events never tried before fulfils them together, in one
# transaction (webhooks/processing.py webhook_events_fulfil); smaller ones go one by one. A value
# larger than any message (e.g. 1000000) turns set-based fulfilment off. Not read from the
# environment (yet): .env.example documents every variable that is.
WEBHOOK_FULFIL_BATCH_MIN_EVENTS = 2
# The outbox relay runs in each Celery worker's main process (webhooks/relay.py).
WEBHOOK_RELAY_ENABLED = env.bool("WEBHOOK_RELAY_ENABLED", default=True)
WEBHOOK_RELAY_POLL_SECONDS = env.float("WEBHOOK_RELAY_POLL_SECONDS", default=0.05)
WEBHOOK_RELAY_BATCH_LIMIT = env.int("WEBHOOK_RELAY_BATCH_LIMIT", default=200)
# Rate limits as "N/period" (s, m, h, d; e.g. 600/m), empty: off (webhooks/throttling.py). Per client
# address, only refused requests count; per endpoint, every request does. Off by default per
# endpoint: a provider catching up after an outage may legitimately send hundreds a second.
WEBHOOK_RATE_LIMIT_PER_CLIENT = env.str("WEBHOOK_RATE_LIMIT_PER_CLIENT", default="60/m")
WEBHOOK_RATE_LIMIT_PER_ENDPOINT = env.str("WEBHOOK_RATE_LIMIT_PER_ENDPOINT", default="")
# CIDRs of the reverse proxies in front of the web processes: only a request from one of them has
# its client address taken from X-Forwarded-For. Empty: REMOTE_ADDR is the client.
WEBHOOK_TRUSTED_PROXIES = env.list("WEBHOOK_TRUSTED_PROXIES", default=[])
# Whether a slug exists and its IP allowlist are cached per process for this long (unknown slugs
# too, so a flood of made-up slugs costs no query). Secrets are not: they apply on the next request.
WEBHOOK_SOURCES_CACHE_SECONDS = env.float("WEBHOOK_SOURCES_CACHE_SECONDS", default=5.0)

# --- PayPal (providers/paypal) -----------------------------------------------------------------
# A PayPal delivery names the certificate that verifies it; it is fetched only over https from these
# exact hosts (host:port for another port), checked against this CA bundle (empty: the system's trust
# store) and one of these certificate names (live, sandbox), and cached per process.
PAYPAL_CERT_URL_HOSTS = env.list("PAYPAL_CERT_URL_HOSTS", default=["api.paypal.com", "api.sandbox.paypal.com"])
PAYPAL_CERT_CA_BUNDLE = env.str("PAYPAL_CERT_CA_BUNDLE", default="")
PAYPAL_CERT_SUBJECT_NAMES = env.list(
    "PAYPAL_CERT_SUBJECT_NAMES",
    default=["messageverificationcerts.paypal.com", "messageverificationcerts.sandbox.paypal.com"],
)
PAYPAL_CERT_FETCH_TIMEOUT_SECONDS = env.float("PAYPAL_CERT_FETCH_TIMEOUT_SECONDS", default=3.0)
PAYPAL_CERT_CACHE_SECONDS = env.int("PAYPAL_CERT_CACHE_SECONDS", default=3600)
# Tests and local runs only: PayPal signs with its own key. A PEM RSA private key file and the URL of
# its certificate let send_test_webhook sign PayPal samples; empty: it refuses and says why.
PAYPAL_TEST_SIGNING_KEY = env.str("PAYPAL_TEST_SIGNING_KEY", default="")
PAYPAL_TEST_CERT_URL = env.str("PAYPAL_TEST_CERT_URL", default="")

# --- Celery -----------------------------------------------------------------------------------
# The embedded default needs no server: kombu's filesystem transport under var/, shared by the
# separate web, worker and beat processes of `make run`.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")  # a host, or kombu warns on every connection
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int("CELERY_BROKER_VISIBILITY_TIMEOUT", default=3600)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "store_processed": False,
        # kombu's default is ./control in the current directory; keep it with the rest of var/.
        "control_folder": str(_broker_dir / "control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Workers consume only this queue (`--queues`, Procfile); each test run uses its own name.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="payhook")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Retries back off exponentially with jitter, capped well below the visibility timeout so a
# delayed retry is never redelivered early by the broker.
CELERY_TASK_MAX_RETRIES = env.int("CELERY_TASK_MAX_RETRIES", default=8)
CELERY_RETRY_BACKOFF_MAX_SECONDS = env.int("CELERY_RETRY_BACKOFF_MAX_SECONDS", default=600)
CELERY_BEAT_SCHEDULE = {
    "webhook-events-dispatch": {
        "task": "webhooks.tasks.webhook_events_dispatch",
        "schedule": env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=10.0),
    },
    "notification-emails-queued-deliver": {
        "task": "notifications.tasks.notification_emails_queued_deliver",
        "schedule": env.float("NOTIFICATION_RECOVERY_INTERVAL_SECONDS", default=15.0),
    },
    "dead-letters-watch": {
        "task": "webhooks.monitoring.dead_letters_watch",
        "schedule": env.float("DLQ_WATCH_INTERVAL_SECONDS", default=60.0),
    },
    "audit-chain-head-publish": {
        "task": "audit.tasks.audit_chain_head_publish",
        "schedule": AUDIT_HEAD_PUBLISH_INTERVAL_SECONDS,
    },
    # "Paid but not provisioned": one WARNING line listing the payments past PROVISIONING_SLO_SECONDS.
    "provisioning-slo-check": {
        "task": "webhooks.monitoring.provisioning_slo_check",
        "schedule": env.float("PROVISIONING_SLO_CHECK_INTERVAL_SECONDS", default=60.0),
    },
    # Monthly partitions of the events table, EVENT_PARTITIONS_AHEAD_MONTHS ahead (PostgreSQL; a no-op on SQLite).
    "event-partitions-ensure": {
        "task": "webhooks.tasks.event_partitions_ensure",
        "schedule": 6 * 3600.0,
    },
    # Raw payloads of finished events past RAW_PAYLOAD_RETENTION_DAYS emptied, in batches (webhooks/retention.py).
    "event-payloads-remove": {
        "task": "webhooks.tasks.event_payloads_remove",
        "schedule": env.float("RAW_PAYLOAD_RETENTION_INTERVAL_SECONDS", default=3600.0),
    },
}
# Raw bodies and headers of finished events are emptied this many days after receipt (hash, ids and
# outcome stay; such an event can no longer be replayed). 0 or empty: keep them forever.
_RAW_PAYLOAD_RETENTION = env.str("RAW_PAYLOAD_RETENTION_DAYS", default="30").strip()
RAW_PAYLOAD_RETENTION_DAYS = int(_RAW_PAYLOAD_RETENTION) if _RAW_PAYLOAD_RETENTION else 0
# How many months ahead the events table's monthly partitions exist (an insert never fails without one:
# it lands in the DEFAULT partition).
EVENT_PARTITIONS_AHEAD_MONTHS = env.int("EVENT_PARTITIONS_AHEAD_MONTHS", default=3)
# E-mails still `queued` this long after their event committed are sent by the recovery task. Safe
# however short: the worker and the recovery task both claim a row before sending, and one wins.
NOTIFICATION_RECOVERY_AFTER_SECONDS = env.float("NOTIFICATION_RECOVERY_AFTER_SECONDS", default=15.0)
# E-mails are claimed (queued → sending), sent and recorded this many at a time (one commit to claim
# a window, one to record it). A worker killed mid-window leaves up to this many rows `sending`, which
# are never resent and are settled by the mail provider's delivery events; 1 leaves at most one.
NOTIFICATION_EMAIL_SEND_WINDOW = env.int("NOTIFICATION_EMAIL_SEND_WINDOW", default=20)
# The watch logs a warning when the dead-letter table holds this many open rows, or when the
# oldest unfinished event is older than this. Any dead letter needs a human, so one is enough; an
# event unfinished after ten minutes means workers are down or stuck (the sweep alone re-dispatches
# within WEBHOOK_REDISPATCH_*).
DLQ_WARN_DEPTH = env.int("DLQ_WARN_DEPTH", default=1)
DLQ_WARN_OLDEST_SECONDS = env.int("DLQ_WARN_OLDEST_SECONDS", default=600)
# "Paid but not provisioned": a payment older than this with no entitlement is an SLO breach (webhooks/slo.py).
PROVISIONING_SLO_SECONDS = env.int("PROVISIONING_SLO_SECONDS", default=300)
# The admin index's 24-hour charts are recomputed at most this often (webhooks/dashboard.py); 0: every load.
ADMIN_DASHBOARD_CACHE_SECONDS = env.int("ADMIN_DASHBOARD_CACHE_SECONDS", default=60)

# --- Cache ------------------------------------------------------------------------------------
# Holds the rate-limit counters, so it must be shared by every web process: Redis when the broker is
# Redis, else a file cache under var/ (the embedded default, no server). CACHE_URL overrides both.
_CACHE_DEFAULT = (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else f"filecache://{VAR_DIR / 'cache'}"
)
CACHES = {"default": env.cache_url_config(env.str("CACHE_URL", default="") or _CACHE_DEFAULT)}
CACHES["default"].setdefault("KEY_PREFIX", "payhook")
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # A Redis outage must not stall deliveries: throttling then fails open quickly.
    CACHES["default"].setdefault("OPTIONS", {}).update({"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
elif CACHES["default"]["BACKEND"] == "django.core.cache.backends.filebased.FileBasedCache":
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 10_000)

# --- Email ------------------------------------------------------------------------------------
# Files under var/mail/ by default, never the console: a recipient address in a terminal or a log is PII.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))  # for the filebased backend
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="payhook <billing@payhook.invalid>")
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# django-anymail, for a provider's API backend (EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend) and
# its delivery events, which settle e-mails a dead worker left `sending` (docs/operations.md). JSON,
# e.g. {"MAILGUN_API_KEY": "...", "WEBHOOK_SECRET": "user:password"}; the tracking webhook is served
# only when WEBHOOK_SECRET is set.
ANYMAIL = env.json("ANYMAIL", default={})

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.exception_handler.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Per token/user and, for anonymous requests, per address, counted in the default cache.
    "DEFAULT_THROTTLE_CLASSES": ["config.api_throttling.ApiUserThrottle", "config.api_throttling.ApiAnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_THROTTLE_USER", default="1000/min") or None,
        "anon": env.str("API_THROTTLE_ANON", default="60/min") or None,
        # Per support account, on the customer lookup only (each costs a web worker ~0.2 s).
        "customer_lookup": env.str("API_THROTTLE_CUSTOMER_LOOKUP", default="30/min") or None,
    },
}
# `manage.py drf_create_token USER` issues keys that expire after this many days (--expires-in overrides).
API_TOKEN_EXPIRES_DAYS = env.int("API_TOKEN_EXPIRES_DAYS", default=90)
SPECTACULAR_SETTINGS = {
    "TITLE": "payhook API",
    "DESCRIPTION": "Read stored webhook events, entitlements, notifications and the audit log.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The map of the internal API (dead letters included) is for the API's groups, not the public
    # nor a buyer's account: /api/schema/ and /api/docs/ both.
    "SERVE_PERMISSIONS": ["config.permissions.ApiDocsReader"],
    # Every operation documents its error answers too (400/401/403/404/429, 413/415 with a body).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.openapi.error_responses_postprocess"],
    # /api/docs/ loads Swagger UI from our own static files (WhiteNoise), not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "DeadLetterStatusEnum": "webhooks.models.DeadLetter.Status",
        "WebhookEventStatusEnum": "webhooks.models.WebhookEvent.Status",
    },
}

# /metrics: with a token, `Authorization: Bearer <token>` is required; without, only a scraper on the
# same host (loopback) is answered (config/health.py).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Logging and error reporting --------------------------------------------------------------
# Log lines carry ids, types and outcomes only: never bodies, headers, secrets or personal data.
# One JSON object per line from every process (config/logs.py, docs/logging.md); `console` is for a
# developer who asks for it in .env. Celery (config/celery_app.py) and gunicorn (config/gunicorn.py)
# use the same formatter.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = logging_config(
    log_format=LOG_FORMAT,
    level=env.str("DJANGO_LOG_LEVEL", default="INFO"),
    loggers={
        # Django's request logger prints the request (path, and on 5xx the whole META) — keep it quiet.
        "django.request": {"level": "ERROR", "propagate": True},
        # "Invalid HTTP_HOST header: '<what the client sent>'": a header value in the log, at every
        # scanner's request; the client already got a JSON 400.
        "django.security.DisallowedHost": {"level": "CRITICAL", "propagate": False},
        # "Forbidden (CSRF cookie not set.): <path>": the path is the client's text (a name, an email
        # without its dot); the client already got its 403.
        "django.security.csrf": {"level": "CRITICAL", "propagate": False},
        # Celery's own lines (task received/succeeded per message, beat's "Sending due task" every
        # few seconds) drown the one line per event and per problem that payhook logs itself.
        "celery": {"level": env.str("CELERY_INTERNAL_LOG_LEVEL", default="WARNING")},
        # …but keep the worker's "Connected to …" and "… ready." lines: start-up stays visible.
        "celery.apps.worker": {"level": "INFO"},
        "celery.worker.consumer.connection": {"level": "INFO"},
    },
)

SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    from config.sentry import sentry_options

    # Django, Celery and logging integrations named in sentry_options(); events, transactions and
    # breadcrumbs are all shaped by config/sentry.py's hooks.
    sentry_sdk.init(
        dsn=SENTRY_DSN,
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        **sentry_options(),
    )

# --- Traces (docs/tracing.md) -----------------------------------------------------------------
# OpenTelemetry, off unless an OTLP/HTTP endpoint is set (then config/tracing.py instruments Django,
# psycopg and Celery in each web and worker process, from config/wsgi.py and config/celery_app.py).
# The SDK's own OTEL_* variables (sampler, exporter headers and timeout) apply as documented upstream.
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="payhook")
