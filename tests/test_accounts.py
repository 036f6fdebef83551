"""Accounts: sign up, log in and out, profile, password change, and the first admin."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a sturdy pass phrase 42"


def test_sign_up_logs_the_new_user_in(client):
    response = client.post(
        reverse("signup"),
        {
            "username": "ada",
            "display_name": "Ada Lovelace",
            "email": "ada@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.url == reverse("rooms:lobby")
    user = User.objects.get(username="ada")
    assert user.shown_name == "Ada Lovelace"
    assert client.get(reverse("rooms:lobby")).status_code == 200


def test_sign_up_returns_to_next(client):
    response = client.post(
        reverse("signup") + "?next=/rooms/some-room/",
        {"username": "bo", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.url == "/rooms/some-room/"


def test_sign_up_ignores_offsite_next(client):
    response = client.post(
        reverse("signup") + "?next=https://evil.example/",
        {"username": "bo", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.url == reverse("rooms:lobby")


def test_sign_up_rejects_mismatched_and_weak_passwords(client):
    page = client.post(
        reverse("signup"), {"username": "cy", "password1": "password", "password2": "password"}
    )
    assert page.status_code == 200
    assert "too common" in page.content.decode()
    assert not User.objects.filter(username="cy").exists()


def test_shown_name_falls_back_to_username(make_user):
    assert make_user("dee", display_name="").shown_name == "dee"


def test_log_in_and_out(client, make_user):
    make_user("eve")
    assert client.get(reverse("login")).status_code == 200
    response = client.post(
        reverse("login"), {"username": "eve", "password": "correct horse battery staple"}
    )
    assert response.url == reverse("rooms:lobby")
    assert client.post(reverse("logout")).url == reverse("home")
    assert client.get(reverse("rooms:lobby")).status_code == 302


def test_wrong_password_is_refused(client, make_user):
    make_user("eve")
    page = client.post(reverse("login"), {"username": "eve", "password": "nope"})
    assert page.status_code == 200
    assert "_auth_user_id" not in client.session


def test_profile_changes_display_name(client, make_user):
    user = make_user("fay")
    client.force_login(user)
    assert client.get(reverse("profile")).status_code == 200
    client.post(reverse("profile"), {"display_name": "Fay W.", "email": ""})
    user.refresh_from_db()
    assert user.display_name == "Fay W."


def test_password_change(client, make_user):
    user = make_user("gil")
    client.force_login(user)
    assert client.get(reverse("password_change")).status_code == 200
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "correct horse battery staple",
            "new_password1": PASSWORD,
            "new_password2": PASSWORD,
        },
    )
    assert response.url == reverse("password_change_done")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_ensure_admin_creates_one_admin_with_a_random_password(capsys):
    call_command("ensure_admin")
    first = capsys.readouterr().out
    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    password = first.split("with password: ")[1].split()[0]
    assert admin.check_password(password)
    call_command("ensure_admin")
    second = capsys.readouterr().out
    assert password not in second
    assert "changepassword admin" in second
    assert User.objects.filter(is_superuser=True).count() == 1
