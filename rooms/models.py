"""Rooms and the people in them.

A Participant row is one connection to a room (one browser tab): it records who joined, when,
through which connection, and how it ended. The rows are the join/leave history the admin shows
and the live presence the lobby counts. A ChatMessage is one line of a room's chat.
"""

import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


def _new_invite_key() -> str:
    return secrets.token_urlsafe(12)


class Room(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public", _("Public: listed in the lobby")
        PRIVATE = "private", _("Private: invite link only")

    class ScreenSharing(models.TextChoices):
        EVERYONE = "everyone", _("Everyone")
        OWNER = "owner", _("Only the owner")

    name = models.CharField(_("name"), max_length=80)
    slug = models.SlugField(_("slug"), max_length=60, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="owned_rooms",
        verbose_name=_("owner"),
    )
    description = models.TextField(_("description"), max_length=500, blank=True)
    visibility = models.CharField(
        _("visibility"), max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    max_participants = models.PositiveSmallIntegerField(
        _("max participants"),
        default=10,
        validators=[MinValueValidator(2), MaxValueValidator(1000)],
        help_text=_("How many people can be in the room at once."),
    )
    locked = models.BooleanField(
        _("locked"),
        default=False,
        help_text=_("A locked room lets nobody new in except its owner."),
    )
    screen_sharing = models.CharField(
        _("who can share their screen"),
        max_length=10,
        choices=ScreenSharing.choices,
        default=ScreenSharing.EVERYONE,
        help_text=_("The owner can always share their screen."),
    )
    # Running the meeting (docs/protocol.md, "Running a meeting: moderators").
    ask_to_join = models.BooleanField(
        _("ask to join"),
        default=False,
        help_text=_(
            "People other than the owner and moderators wait until a moderator lets them in."
        ),
    )
    join_muted = models.BooleanField(
        _("everyone joins muted"),
        default=False,
        help_text=_("Microphones start muted by a moderator for everyone but moderators."),
    )
    self_unmute = models.BooleanField(
        _("people can unmute themselves"),
        default=True,
        help_text=_(
            "After a moderator muted them, people can turn their microphone and camera back on "
            "themselves. Otherwise they raise their hand and a moderator allows them."
        ),
    )
    # Changing the key invalidates every invite link handed out before.
    invite_key = models.CharField(
        _("invite key"), max_length=32, default=_new_invite_key, editable=False
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("room")
        verbose_name_plural = _("rooms")
        ordering = ("-created_at",)
        indexes = [models.Index(fields=("visibility", "closed_at"))]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("rooms:detail", kwargs={"slug": self.slug})

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None

    @property
    def is_private(self) -> bool:
        return self.visibility == self.Visibility.PRIVATE


# What a room's owner sets, in the order the room form shows it (rooms.forms.RoomForm); the
# fields rooms.services.room_update may change.
ROOM_SETTINGS = (
    "name",
    "description",
    "visibility",
    "max_participants",
    "locked",
    "screen_sharing",
    "ask_to_join",
    "join_muted",
    "self_unmute",
)


class Participant(models.Model):
    class State(models.TextChoices):
        CONNECTED = "connected", _("Connected")
        LEFT = "left", _("Left")  # said goodbye
        DROPPED = "dropped", _("Dropped")  # connection vanished without a goodbye
        # the room was closed or deleted around them, the meeting ended, or a moderator removed them
        REMOVED = "removed", _("Removed")

    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="participants", verbose_name=_("room")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="participations",
        verbose_name=_("user"),
    )
    display_name = models.CharField(_("display name"), max_length=64)
    connection_id = models.CharField(_("connection"), max_length=200, blank=True)
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.CONNECTED
    )
    joined_at = models.DateTimeField(_("joined at"), auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen at"))
    left_at = models.DateTimeField(_("left at"), null=True, blank=True)
    # While the hand is up; cleared when it goes down and when the connection ends.
    hand_raised_at = models.DateTimeField(_("hand raised at"), null=True, blank=True)
    # A moderator stopped this participant's microphone or camera reaching anyone (the media
    # server no longer forwards it); only a moderator's allow turns it back on.
    muted_audio_by_moderator = models.BooleanField(
        _("microphone blocked by a moderator"), default=False
    )
    muted_video_by_moderator = models.BooleanField(
        _("camera blocked by a moderator"), default=False
    )

    class Meta:
        verbose_name = _("participant")
        verbose_name_plural = _("participants")
        ordering = ("-joined_at",)
        indexes = [models.Index(fields=("room", "state", "last_seen_at"))]

    def __str__(self) -> str:
        return f"{self.display_name} in {self.room}"


def clock(seconds: float | None) -> str:
    """A duration as a clock shows it (1:02:03, 4:05), or "" if unknown."""
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def _room_link(related_name: str) -> models.ForeignKey:
    return models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name=related_name, verbose_name=_("room")
    )


def _user_link(related_name: str = "+") -> models.ForeignKey:
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name=related_name,
        verbose_name=_("user"),
    )


def _by_link(verbose_name: str) -> models.ForeignKey:
    """Who did it (a moderator, say): the record stays when their account goes."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=verbose_name,
    )


def _one_row_per_user(name: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(fields=("room", "user"), name=name)


class RoomModerator(models.Model):
    """A user the room's owner made a moderator of the room (the owner always is one)."""

    room = _room_link("moderators")
    user = _user_link("moderated_rooms")
    granted_by = _by_link(_("granted by"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("room moderator")
        verbose_name_plural = _("room moderators")
        constraints = [_one_row_per_user("one_moderator_row_per_user")]

    def __str__(self) -> str:
        return f"{self.user} moderates {self.room}"


class RoomRemoval(models.Model):
    """A user a moderator removed from the room's meeting: their joins are refused until the
    room is empty again (then the row is deleted), or for good when they were banned (until a
    moderator or an admin lets them back)."""

    room = _room_link("removals")
    user = _user_link()
    removed_by = _by_link(_("removed by"))
    banned = models.BooleanField(
        _("banned"), default=False, help_text=_("Kept after the meeting: refused every time.")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("removal from a meeting")
        verbose_name_plural = _("removals from meetings")
        constraints = [_one_row_per_user("one_removal_row_per_user")]

    def __str__(self) -> str:
        return f"{self.user} removed from {self.room}"


class JoinRequest(models.Model):
    """A user asking to join a room that asks people to wait (`Room.ask_to_join`), and what a
    moderator decided. Waiting rows live as long as the person's page keeps asking (refreshed
    like presence); decided rows last until the meeting is over (the room empties), so a person
    let in who reconnects does not wait again."""

    class State(models.TextChoices):
        WAITING = "waiting", _("Waiting")
        ADMITTED = "admitted", _("Let in")
        DENIED = "denied", _("Turned away")

    room = _room_link("join_requests")
    user = _user_link()
    display_name = models.CharField(_("display name"), max_length=64)
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.WAITING
    )
    connection_id = models.CharField(_("connection"), max_length=200, blank=True)
    asked_at = models.DateTimeField(_("asked at"))
    last_seen_at = models.DateTimeField(_("last seen at"))
    decided_by = _by_link(_("decided by"))
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    denials = models.PositiveSmallIntegerField(_("times turned away"), default=0)

    class Meta:
        verbose_name = _("request to join")
        verbose_name_plural = _("requests to join")
        ordering = ("asked_at", "pk")
        constraints = [_one_row_per_user("one_join_request_per_user")]

    def __str__(self) -> str:
        return f"{self.display_name} asking to join {self.room}"


CHAT_MESSAGE_MAX_LENGTH = 1000


class ChatMessage(models.Model):
    """One message of a room's chat, as it was sent: plain text, never HTML. The author's name
    is copied at sending time, so the chat reads the same after they rename or are deleted."""

    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="chat_messages", verbose_name=_("room")
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chat_messages",
        verbose_name=_("author"),
    )
    participant = models.ForeignKey(
        Participant,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chat_messages",
        verbose_name=_("participant"),
    )
    author_name = models.CharField(_("author name"), max_length=64)
    text = models.TextField(_("text"), max_length=CHAT_MESSAGE_MAX_LENGTH)
    created_at = models.DateTimeField(_("sent at"), auto_now_add=True)

    class Meta:
        verbose_name = _("chat message")
        verbose_name_plural = _("chat messages")
        ordering = ("created_at", "pk")
        indexes = [models.Index(fields=("room", "created_at"))]

    def __str__(self) -> str:
        return f"{self.author_name}: {self.text[:50]}"


class Recording(models.Model):
    """A recording of a room's meeting: one file per published stream while it runs (written by
    the media server, `RecordingTrack`), then one composed file (a grid of the videos, the sound
    mixed) that the room's owner downloads. Its files live under RECORDINGS_DIR, in
    `directory`; deleting the row deletes them (rooms.signals)."""

    class State(models.TextChoices):
        RECORDING = "recording", _("Recording")
        COMPOSING = "composing", _("Being prepared")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    room = _room_link("recordings")
    started_by = _by_link(_("started by"))
    stopped_by = _by_link(_("stopped by"))
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.RECORDING
    )
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    # Under RECORDINGS_DIR: the directory of its files, and the composed file in it.
    directory = models.CharField(_("directory"), max_length=200, blank=True)
    file = models.CharField(_("file"), max_length=300, blank=True)
    size = models.BigIntegerField(_("size in bytes"), default=0)
    duration = models.FloatField(_("duration in seconds"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("recording")
        verbose_name_plural = _("recordings")
        ordering = ("-started_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("room",),
                condition=models.Q(state="recording"),
                name="one_running_recording_per_room",
            )
        ]

    def __str__(self) -> str:
        return f"{self.room} at {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def length(self) -> str:
        return clock(self.duration)


class RecordingTrack(models.Model):
    """One published stream of a recording (someone's camera and microphone, or a shared
    screen) as the media server wrote it, from when it started being recorded."""

    recording = models.ForeignKey(
        Recording, on_delete=models.CASCADE, related_name="tracks", verbose_name=_("recording")
    )
    participant = models.ForeignKey(
        Participant,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("participant"),
    )
    label = models.CharField(_("who"), max_length=100)
    source = models.CharField(_("source"), max_length=8)  # "camera" or "screen"
    file = models.CharField(_("file"), max_length=300)  # under RECORDINGS_DIR
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)

    class Meta:
        verbose_name = _("recorded stream")
        verbose_name_plural = _("recorded streams")
        ordering = ("started_at", "pk")

    def __str__(self) -> str:
        return self.file


class RoomVideo(models.Model):
    """A video the room's owner uploaded to play into its meetings (WebM or MP4). The file lives
    under RECORDINGS_DIR, in `file`; deleting the row deletes it (rooms.signals)."""

    room = _room_link("videos")
    uploaded_by = _by_link(_("uploaded by"))
    title = models.CharField(_("title"), max_length=100)
    file = models.CharField(_("file"), max_length=300)  # under RECORDINGS_DIR
    size = models.BigIntegerField(_("size in bytes"), default=0)
    duration = models.FloatField(_("duration in seconds"), null=True, blank=True)
    uploaded_at = models.DateTimeField(_("uploaded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("video")
        verbose_name_plural = _("videos")
        ordering = ("-uploaded_at", "-pk")

    def __str__(self) -> str:
        return self.title

    @property
    def length(self) -> str:
        return clock(self.duration)
