"""Writes on accounts."""

import secrets

from accounts.models import User


def user_create(*, username: str, password: str, display_name: str = "", email: str = "") -> User:
    return User.objects.create_user(
        username=username, password=password, display_name=display_name, email=email
    )


def admin_ensure(*, username: str = "admin") -> tuple[User, str | None]:
    """Create a superuser with a random password unless one exists.

    Returns the superuser and its new password, or None for the password when a superuser
    already existed (its password is never shown again).
    """
    existing = User.objects.filter(is_superuser=True).order_by("pk").first()
    if existing is not None:
        return existing, None
    password = secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username=username, password=password, email="")
    return user, password
