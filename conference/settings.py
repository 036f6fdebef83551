"""Django settings, read from the environment (12-factor) through django-environ.

Defaults serve a fresh machine with no services: SQLite, the in-memory channel layer and the
embedded media server on 127.0.0.1. Production swaps in PostgreSQL, Redis, Kurento and coturn by
setting environment variables only; docs/configuration.md lists every variable.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "accounts",
    "rooms",
    "signaling",
]

MIDDLEWARE = [
    # /healthz for load balancers: answered before ALLOWED_HOSTS and the HTTPS redirect apply.
    "conference.health.HealthCheckMiddleware",
    # /metrics for Prometheus: same placement and reasons as /healthz (optional METRICS_TOKEN).
    "conference.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the cookie set by the header's switcher, else the browser's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A logged-in user's saved language, and the browser's time zone (accounts/middleware.py).
    "accounts.middleware.UserLanguageMiddleware",
    "accounts.middleware.TimezoneMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "conference.urls"
ASGI_APPLICATION = "conference.asgi.application"
WSGI_APPLICATION = "conference.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets pages read while a consumer writes; IMMEDIATE transactions take the write lock
    # up front, so concurrent joins queue (within the timeout) instead of failing to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

elif (
    DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    and env.bool("DATABASE_POOL", default=True)
    and not DATABASES["default"]["CONN_MAX_AGE"]
):
    # Without a pool every database call of a consumer opens a new connection (CONN_MAX_AGE=0
    # is what Django advises under ASGI); psycopg's pool keeps them open and shares them.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
    }

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels-redis waits for messages with a blocking pop of 5 s; redis-py 8 cuts
                # reads off after 5 s by default, which would take down every WebSocket whose
                # worker got no message for 5 s. Reads get longer than the pop (a REDIS_URL
                # `?socket_timeout=` wins over this).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="conference"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "rooms:lobby"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ko", "한국어")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "conference.storage.StaticStorage"
    },
}
# Without collectstatic (development, tests) whitenoise serves straight from the app folders.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Behind a TLS-terminating proxy (deploy/nginx) set SECURE_PROXY_SSL_HEADER=true.
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Rooms and presence ----------------------------------------------------------------------
ROOM_MAX_PARTICIPANTS_LIMIT = env.int("ROOM_MAX_PARTICIPANTS_LIMIT", default=50)
ROOM_DEFAULT_MAX_PARTICIPANTS = env.int("ROOM_DEFAULT_MAX_PARTICIPANTS", default=10)
# Invite links stay valid until the owner resets them; set a lifetime in seconds to expire them.
ROOM_INVITE_MAX_AGE = env.int("ROOM_INVITE_MAX_AGE", default=None)
# Each connection refreshes its presence this often; one not seen for PRESENCE_STALE_SECONDS is
# taken for gone (its worker crashed) and reaped.
PRESENCE_HEARTBEAT_SECONDS = env.float("PRESENCE_HEARTBEAT_SECONDS", default=15.0)
PRESENCE_STALE_SECONDS = env.float("PRESENCE_STALE_SECONDS", default=60.0)
# Signaling input limits, per connection.
SIGNALING_MAX_MESSAGE_BYTES = env.int("SIGNALING_MAX_MESSAGE_BYTES", default=64 * 1024)
SIGNALING_RATE_PER_SECOND = env.float("SIGNALING_RATE_PER_SECOND", default=50.0)
SIGNALING_RATE_BURST = env.int("SIGNALING_RATE_BURST", default=300)
# What may wait, per connection, for the server to handle it (beyond: dropped, with an error).
SIGNALING_INBOUND_BUFFER_BYTES = env.int("SIGNALING_INBOUND_BUFFER_BYTES", default=1024 * 1024)

# --- Media plane ----------------------------------------------------------------------------------
KMS_URL = env.str("KMS_URL", default="ws://127.0.0.1:8888/kurento")
# Several media servers: each new room goes to the least-loaded reachable one and stays there.
KMS_URLS = env.list("KMS_URLS", default=[KMS_URL])
# Seconds to wait for the media server: to open its WebSocket, and to answer one request.
KMS_CONNECT_TIMEOUT = env.float("KMS_CONNECT_TIMEOUT", default=3.0)
KMS_REQUEST_TIMEOUT = env.float("KMS_REQUEST_TIMEOUT", default=10.0)
# A media server unreachable this long is given up: its rooms move to another one of KMS_URLS
# (with none, their people are told and their pages keep retrying).
KMS_FAILOVER_SECONDS = env.float("KMS_FAILOVER_SECONDS", default=5.0)

# --- Recordings -----------------------------------------------------------------------------------
# Where recordings are kept, as this web tier reads them; each one's per-stream files (written by
# the media server) and the composed file that people download.
RECORDINGS_DIR = env.path("RECORDINGS_DIR", default=BASE_DIR / "recordings")
# The same directory as the media server sees it (a shared volume may be mounted elsewhere
# there, e.g. KMS in a container). The embedded media server is started with RECORDINGS_DIR.
RECORDINGS_MEDIA_DIR = env.str("RECORDINGS_MEDIA_DIR", default=str(RECORDINGS_DIR))
# What one room's recordings may take on disk, in bytes (0: no limit): recording stops there.
RECORDINGS_MAX_BYTES_PER_ROOM = env.int("RECORDINGS_MAX_BYTES_PER_ROOM", default=5 * 1024**3)
# The largest video a room's owner may upload to play into a meeting (it counts against the
# room's space above too).
ROOM_VIDEO_MAX_BYTES = env.int("ROOM_VIDEO_MAX_BYTES", default=500 * 1024**2)
# Behind nginx: the internal location that serves RECORDINGS_DIR (X-Accel-Redirect); empty,
# Django streams the file itself.
RECORDINGS_X_ACCEL_PREFIX = env.str("RECORDINGS_X_ACCEL_PREFIX", default="")

# --- TURN/STUN (coturn REST-API credentials) ------------------------------------------------------
STUN_URLS = env.list("STUN_URLS", default=[])
TURN_URLS = env.list("TURN_URLS", default=[])
TURN_SECRET = env.str("TURN_SECRET", default="")
TURN_CREDENTIAL_TTL = env.int("TURN_CREDENTIAL_TTL", default=6 * 3600)
# "relay" makes browsers use TURN only (for networks that must not see peers' addresses).
ICE_TRANSPORT_POLICY = env.str("ICE_TRANSPORT_POLICY", default="all")
if ICE_TRANSPORT_POLICY not in ("all", "relay"):
    raise ImproperlyConfigured('ICE_TRANSPORT_POLICY must be "all" or "relay".')
# Give the media server's endpoints TURN too (turnUrl), for a media server behind NAT.
KMS_USE_TURN = env.bool("KMS_USE_TURN", default=False)

# /metrics (Prometheus): when set, scrapers must send `Authorization: Bearer <token>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}
        for name in ("accounts", "rooms", "signaling", "django.request")
    },
}
