"""The product's user: Django's user plus the name shown to others in rooms."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    display_name = models.CharField(
        max_length=64,
        blank=True,
        help_text="The name others see in rooms. Your username is used when this is empty.",
    )

    @property
    def shown_name(self) -> str:
        return self.display_name.strip() or self.get_full_name() or self.username
