"""The product's user: Django's user plus the name shown to others in rooms, and the language
they chose for the pages."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    display_name = models.CharField(
        _("display name"),
        max_length=64,
        blank=True,
        help_text=_("The name others see in rooms. Your username is used when this is empty."),
    )
    # A code of settings.LANGUAGES, set by the header's language switcher; empty: the browser's.
    language = models.CharField(_("language"), max_length=10, blank=True)

    class Meta(AbstractUser.Meta):
        verbose_name = _("user")
        verbose_name_plural = _("users")

    @property
    def shown_name(self) -> str:
        return self.display_name.strip() or self.get_full_name() or self.username
