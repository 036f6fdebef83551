"""Settings for the test suite: the product's own settings with test-friendly environment defaults.

Only defaults are set here, so `make test` can point the same suite at PostgreSQL and Redis
through DATABASE_URL and REDIS_URL (the production topology run).
"""

import os

TEST_ENV_DEFAULTS = {
    "SECRET_KEY": "test-only-secret-key-not-for-production",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
    "WHITENOISE_USE_FINDERS": "true",
    "SECURE_SSL_REDIRECT": "false",
    "LOG_LEVEL": "WARNING",
}
for _name, _value in TEST_ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from conference.settings import *  # noqa: E402, F403

STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, like `make run` uses: the in-memory shared cache takes table locks that ignore
    # the busy timeout, so concurrent joins would fail there for reasons production never sees.
    # TEST_SQLITE_NAME lets two test runs share a checkout without sharing a database.
    _name = os.environ.get("TEST_SQLITE_NAME", ".test-db.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / _name)}  # noqa: F405
