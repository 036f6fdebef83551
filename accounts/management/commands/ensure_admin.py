"""Create the first admin with a random password and say how to log in (used by `make run`)."""

from django.core.management.base import BaseCommand

from accounts.services import admin_ensure


class Command(BaseCommand):
    help = "Create a superuser with a random password if none exists, and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000")

    def handle(self, *args, username: str, url: str, **options):
        user, password = admin_ensure(username=username)
        if password is not None:
            self.stdout.write(
                f"Created the admin account. Log in at {url}/accounts/login/ as "
                f"'{user.username}' with password: {password}\n"
                "(shown once; change it at /accounts/password/ or with "
                f"`.venv/bin/python manage.py changepassword {user.username}`)"
            )
        else:
            self.stdout.write(
                f"Admin account: '{user.username}' (log in at {url}/accounts/login/). "
                "Forgot the password? Run "
                f"`.venv/bin/python manage.py changepassword {user.username}`."
            )
