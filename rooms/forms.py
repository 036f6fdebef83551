"""Room create/edit form."""

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from rooms.models import ROOM_SETTINGS, Room


class RoomForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ROOM_SETTINGS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "visibility": forms.RadioSelect,
            "screen_sharing": forms.RadioSelect,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.ROOM_MAX_PARTICIPANTS_LIMIT
        field = self.fields["max_participants"]
        field.widget.attrs.update({"min": 2, "max": limit})
        field.help_text = _("Between 2 and %(limit)d.") % {"limit": limit}
        if not self.instance.pk:
            field.initial = settings.ROOM_DEFAULT_MAX_PARTICIPANTS

    def clean_max_participants(self) -> int:
        value = self.cleaned_data["max_participants"]
        limit = settings.ROOM_MAX_PARTICIPANTS_LIMIT
        if value > limit:
            raise forms.ValidationError(
                _("This server allows at most %(limit)d people per room.") % {"limit": limit}
            )
        return value

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError(_("Give the room a name."))
        return name


class VideoUploadForm(forms.Form):
    """A video for the room's owner to play into its meetings."""

    title = forms.CharField(label=_("Title"), max_length=100, required=False)
    file = forms.FileField(
        label=_("Video file (WebM or MP4)"),
        widget=forms.ClearableFileInput(attrs={"accept": "video/webm,video/mp4,.webm,.mp4,.mkv"}),
    )
