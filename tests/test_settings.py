"""Settings come from the environment; a production configuration passes `check --deploy`."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.settings import TEST_ENV_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "meet.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://meet.example.org",
    "SECURE_PROXY_SSL_HEADER": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def _outside_env() -> dict[str, str]:
    """This machine's environment without what the test settings put into it."""
    drop = {*TEST_ENV_DEFAULTS, *PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE", "REDIS_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = _outside_env()
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_configuration_passes_the_deploy_check():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_secret_key_is_required_without_debug():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_redis_url_switches_the_channel_layer():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    for env, expected in (
        ({"DEBUG": "true"}, "channels.layers.InMemoryChannelLayer"),
        ({"DEBUG": "true", "REDIS_URL": "redis://127.0.0.1:6379/3"}, "RedisChannelLayer"),
    ):
        clean = _outside_env()
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**clean, "DJANGO_SETTINGS_MODULE": "conference.settings", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert expected in result.stdout, result.stderr
