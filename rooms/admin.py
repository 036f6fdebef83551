"""Admin for rooms (with live counts and a close action), and read-only, for each room, the
join/leave history and the chat. Staff moderate any room from here: who is in its meeting (mute,
remove, ban), who waits to be let in, who was removed, and who moderates it; and every room's
recordings, to download or delete.

Moderation goes through rooms.services only, as in the meeting: the services write and publish
the room's events, and each participant's own connection enforces them on the media server."""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.translation import gettext, gettext_noop, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from rooms import events, selectors, services
from rooms.models import (
    ChatMessage,
    JoinRequest,
    Participant,
    Recording,
    RecordingTrack,
    Room,
    RoomModerator,
    RoomRemoval,
    RoomVideo,
)


class OpenClosedFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("open", _("Open")), ("closed", _("Closed")))

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


def _changelist_url(model: str, **query: object) -> str:
    return reverse(f"admin:rooms_{model}_changelist") + "?" + urlencode(query)


class LiveFilter(admin.SimpleListFilter):
    """Participants in their meeting now: connected and seen recently (the lobby's count)."""

    title = _("presence")
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return (("yes", _("In the meeting now")), ("no", _("Not in the meeting now")))

    def queryset(self, request, queryset):
        live = {
            "state": Participant.State.CONNECTED,
            "last_seen_at__gte": selectors.presence_cutoff(),
        }
        if self.value() == "yes":
            return queryset.filter(**live)
        if self.value() == "no":
            return queryset.exclude(**live)
        return queryset


class _ReadOnlyInline(admin.TabularInline):
    """A list in the room's page: shown, never edited there (the services write these rows)."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class LiveParticipantInline(_ReadOnlyInline):
    """Who is in the room's meeting now (the room's page gives it selectors.participants_live)."""

    model = Participant
    verbose_name = _("participant in the meeting now")
    verbose_name_plural = _("In the meeting now")
    fields = (
        "display_name",
        "user",
        "joined_at",
        "muted_audio_by_moderator",
        "muted_video_by_moderator",
    )
    readonly_fields = fields


class WaitingInline(_ReadOnlyInline):
    """Who waits to be let in now (the room's page gives it selectors.join_requests_waiting)."""

    model = JoinRequest
    verbose_name = _("person waiting to be let in")
    verbose_name_plural = _("Waiting to be let in")
    fields = ("display_name", "user", "asked_at", "denials")
    readonly_fields = fields


class RoomModeratorInline(admin.TabularInline):
    """Who moderates the room besides its owner: staff add and remove them here."""

    model = RoomModerator
    fk_name = "room"
    fields = ("user", "granted_by", "created_at")
    readonly_fields = ("granted_by", "created_at")
    raw_id_fields = ("user",)
    extra = 0


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "owner",
        "visibility",
        "locked",
        "live_count",
        "max_participants",
        "created_at",
        "closed_at",
    )
    list_filter = (
        OpenClosedFilter,
        "visibility",
        "locked",
        "screen_sharing",
        "ask_to_join",
        "join_muted",
        "self_unmute",
        "created_at",
    )
    search_fields = ("name", "slug", "description", "owner__username", "owner__display_name")
    readonly_fields = (
        "slug",
        "created_at",
        "updated_at",
        "closed_at",
        "live_count",
        "live_participants",
        "waiting",
        "removals",
        "history",
        "chat",
    )
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    actions = ("close_rooms", "reopen_rooms")
    inlines = (RoomModeratorInline, LiveParticipantInline, WaitingInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return selectors.rooms_with_live_count()

    def get_inlines(self, request: HttpRequest, obj: Room | None) -> list[type]:
        if obj is None:  # a new room has nobody in it yet
            return [RoomModeratorInline]
        return list(self.inlines)

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Room, inline: admin.options.InlineModelAdmin, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if obj.pk is not None and isinstance(inline, LiveParticipantInline):
            kwargs["queryset"] = selectors.participants_live(room=obj).select_related("user")
        elif obj.pk is not None and isinstance(inline, WaitingInline):
            kwargs["queryset"] = selectors.join_requests_waiting(room=obj).select_related("user")
        return kwargs

    def save_model(self, request: HttpRequest, room: Room, form, change: bool) -> None:
        """A change of the room's settings goes through the service, as the owner's form does:
        the people in the meeting see it (room_updated), and turning "ask to join" off lets in
        whoever waits."""
        updated = [name for name in form.changed_data if name in services.ROOM_UPDATABLE]
        if not change or not updated:
            super().save_model(request, room, form, change)
            return
        others = [name for name in form.changed_data if name not in updated]
        if others:
            room.save(update_fields=[*others, "updated_at"])
        services.room_update(room=room, **{name: form.cleaned_data[name] for name in updated})

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not RoomModerator:
            super().save_formset(request, form, formset, change)
            return
        rows = formset.save(commit=False)
        for row in formset.deleted_objects:
            row.delete()
        changed_users = {row.pk for row, fields in formset.changed_objects if "user" in fields}
        for row in rows:
            if row.pk is None or row.pk in changed_users:
                row.granted_by = request.user
            row.save()

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        moderators_changed = "owner" in form.changed_data and change
        for formset in formsets:
            if formset.model is RoomModerator:
                moderators_changed |= bool(
                    formset.new_objects or formset.changed_objects or formset.deleted_objects
                )
        if moderators_changed:
            # The meeting's people see who moderates now (sent once the save commits).
            room = form.instance
            events.publish_moderators_changed(room.pk, selectors.room_moderator_ids(room=room))

    @admin.display(description=_("Live participants"), ordering="live_count")
    def live_count(self, room: Room) -> int:
        return room.live_count

    @admin.display(description=_("In the meeting now"))
    def live_participants(self, room: Room) -> str:
        if room.pk is None:
            return "—"
        url = _changelist_url("participant", room__id__exact=room.pk, live="yes")
        count = selectors.participants_live_count(room=room)
        return format_html(
            '<a href="{}">{}</a>',
            url,
            ngettext(
                "%(count)d person in the meeting now: mute or remove them",
                "%(count)d people in the meeting now: mute or remove them",
                count,
            )
            % {"count": count},
        )

    @admin.display(description=_("Waiting to be let in"))
    def waiting(self, room: Room) -> str:
        if room.pk is None:
            return "—"
        url = _changelist_url("joinrequest", room__id__exact=room.pk)
        count = selectors.join_requests_waiting(room=room).count()
        return format_html(
            '<a href="{}">{}</a>',
            url,
            ngettext(
                "%(count)d person waiting: let them in or turn them away",
                "%(count)d people waiting: let them in or turn them away",
                count,
            )
            % {"count": count},
        )

    @admin.display(description=_("Removed from the meeting"))
    def removals(self, room: Room) -> str:
        if room.pk is None:
            return "—"
        url = _changelist_url("roomremoval", room__id__exact=room.pk)
        count = room.removals.count()
        return format_html(
            '<a href="{}">{}</a>',
            url,
            ngettext(
                "%(count)d person removed or banned: let them back in",
                "%(count)d people removed or banned: let them back in",
                count,
            )
            % {"count": count},
        )

    @admin.display(description=_("Join/leave history"))
    def history(self, room: Room) -> str:
        url = reverse("admin:rooms_participant_changelist") + f"?room__id__exact={room.pk}"
        return format_html('<a href="{}">{}</a>', url, gettext("All joins and leaves of this room"))

    @admin.display(description=_("Chat"))
    def chat(self, room: Room) -> str:
        url = reverse("admin:rooms_chatmessage_changelist") + f"?room__id__exact={room.pk}"
        count = room.chat_messages.count()
        return format_html('<a href="{}">{}</a>', url, gettext("Chat of this room (%d)") % count)

    @admin.action(description=_("Close selected rooms (disconnects everyone in them)"))
    def close_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        rooms = list(queryset.filter(closed_at__isnull=True))
        removed = sum(
            services.room_close(
                room=room, message=gettext_noop("An administrator closed this room.")
            )
            for room in rooms
        )
        self.message_user(
            request,
            gettext("Closed %(rooms)d room(s); %(removed)d participant(s) were disconnected.")
            % {"rooms": len(rooms), "removed": removed},
            messages.SUCCESS,
        )

    @admin.action(description=_("Reopen selected rooms"))
    def reopen_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        rooms = list(queryset.filter(closed_at__isnull=False))
        for room in rooms:
            services.room_reopen(room=room)
        self.message_user(
            request,
            gettext("Reopened %(rooms)d room(s).") % {"rooms": len(rooms)},
            messages.SUCCESS,
        )


def _refused(model_admin: admin.ModelAdmin, request: HttpRequest, who: str, reason: str) -> None:
    model_admin.message_user(
        request,
        gettext("Not done for %(who)s: %(reason)s") % {"who": who, "reason": reason},
        messages.WARNING,
    )


class ModerationActions:
    """Admin actions that moderate rooms through rooms.services, one selected row at a time:
    a row refused (the owner, someone who left meanwhile) is reported and the others go on.
    Staff moderate every room (selectors.room_moderates)."""

    def has_moderate_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def _each(
        self,
        request: HttpRequest,
        rows: list[Any],
        act: Callable[[Any], object],
        who: Callable[[Any], str],
        done: Callable[[int], str],
    ) -> None:
        count = 0
        for row in rows:
            try:
                if act(row) is not False:
                    count += 1
            except services.ActionRefused as refused:
                _refused(self, request, who(row), refused.message)
        if count:
            self.message_user(request, done(count), messages.SUCCESS)


def _media_action(kind: str, blocked: bool, description: str, done: str) -> Callable:
    """An admin action blocking (or allowing) the selected participants' `kind`; `done` says
    how many, with %(count)d."""

    @admin.action(description=description, permissions=("moderate",))
    def action(self, request: HttpRequest, queryset: QuerySet[Participant]) -> None:
        self._media(request, queryset, kind=kind, blocked=blocked, done=done)

    return action


def _remove_action(ban: bool, description: str, done: str) -> Callable:
    @admin.action(description=description, permissions=("moderate",))
    def action(self, request: HttpRequest, queryset: QuerySet[Participant]) -> None:
        self._remove(request, queryset, ban=ban, done=done)

    return action


@admin.register(Participant)
class ParticipantAdmin(ModerationActions, admin.ModelAdmin):
    """The join/leave history: read-only, written only by the signaling services. Its actions
    moderate those in a meeting now, as a moderator of their room would."""

    list_display = (
        "display_name",
        "user",
        "room",
        "state",
        "muted_audio_by_moderator",
        "muted_video_by_moderator",
        "joined_at",
        "left_at",
        "duration",
    )
    list_filter = (LiveFilter, "state", "joined_at")
    search_fields = ("display_name", "user__username", "room__name", "room__slug")
    list_select_related = ("user", "room")
    date_hierarchy = "joined_at"
    actions = (
        "mute_audio",
        "allow_audio",
        "mute_video",
        "allow_video",
        "remove_from_meeting",
        "remove_and_ban",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def _present(self, request: HttpRequest, queryset: QuerySet[Participant]) -> list[Participant]:
        """The selected participants still connected; the others are reported and skipped."""
        rows = list(queryset.select_related("room"))
        present = [p for p in rows if p.state == Participant.State.CONNECTED]
        skipped = len(rows) - len(present)
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "Skipped %(count)d participant who is no longer in the meeting.",
                    "Skipped %(count)d participants who are no longer in the meeting.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
        return present

    def _media(
        self,
        request: HttpRequest,
        queryset: QuerySet[Participant],
        *,
        kind: str,
        blocked: bool,
        done: str,
    ) -> None:
        self._each(
            request,
            self._present(request, queryset),
            lambda p: services.participant_moderate_media(
                room_id=p.room_id,
                participant_id=p.pk,
                kind=kind,
                blocked=blocked,
                by_user=request.user,
            ),
            lambda p: p.display_name,
            lambda count: done % {"count": count},
        )

    def _remove(
        self, request: HttpRequest, queryset: QuerySet[Participant], *, ban: bool, done: str
    ) -> None:
        self._each(
            request,
            self._present(request, queryset),
            lambda p: services.participant_remove(
                room_id=p.room_id, participant_id=p.pk, by_user=request.user, ban=ban
            ),
            lambda p: p.display_name,
            lambda count: done % {"count": count},
        )

    mute_audio = _media_action(
        "audio",
        True,
        _("Mute microphone"),
        ngettext_lazy(
            "Muted the microphone of %(count)d participant.",
            "Muted the microphones of %(count)d participants.",
            "count",
        ),
    )
    allow_audio = _media_action(
        "audio",
        False,
        _("Allow microphone"),
        ngettext_lazy(
            "Allowed the microphone of %(count)d participant.",
            "Allowed the microphones of %(count)d participants.",
            "count",
        ),
    )
    mute_video = _media_action(
        "video",
        True,
        _("Stop camera"),
        ngettext_lazy(
            "Stopped the camera of %(count)d participant.",
            "Stopped the cameras of %(count)d participants.",
            "count",
        ),
    )
    allow_video = _media_action(
        "video",
        False,
        _("Allow camera"),
        ngettext_lazy(
            "Allowed the camera of %(count)d participant.",
            "Allowed the cameras of %(count)d participants.",
            "count",
        ),
    )
    remove_from_meeting = _remove_action(
        False,
        _("Remove from the meeting"),
        ngettext_lazy(
            "Removed %(count)d participant from the meeting.",
            "Removed %(count)d participants from the meeting.",
            "count",
        ),
    )
    remove_and_ban = _remove_action(
        True,
        _("Remove and ban from the room"),
        ngettext_lazy(
            "Removed and banned %(count)d participant.",
            "Removed and banned %(count)d participants.",
            "count",
        ),
    )

    @admin.display(description=_("Duration"))
    def duration(self, participant: Participant) -> str:
        if participant.left_at is None:
            return "—"
        seconds = int((participant.left_at - participant.joined_at).total_seconds())
        minutes, seconds = divmod(max(seconds, 0), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    """Rooms' chat: read-only, written only by the chat service; a room's chat goes with it."""

    list_display = ("created_at", "room", "author_name", "excerpt")
    list_filter = ("created_at",)
    search_fields = ("text", "author_name", "room__name", "room__slug")
    list_select_related = ("room",)
    date_hierarchy = "created_at"
    fields = ("room", "author_name", "author", "participant", "created_at", "text")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description=_("Message"))
    def excerpt(self, message: ChatMessage) -> str:
        return Truncator(message.text).chars(80)


@admin.register(JoinRequest)
class JoinRequestAdmin(ModerationActions, admin.ModelAdmin):
    """Requests to join rooms that ask people to wait: written by the services only; staff let
    those waiting in or turn them away, as a moderator of the room would."""

    list_display = (
        "room",
        "display_name",
        "user",
        "state",
        "asked_at",
        "last_seen_at",
        "decided_by",
        "denials",
    )
    list_filter = ("state", "asked_at")
    search_fields = ("display_name", "user__username", "room__name", "room__slug")
    list_select_related = ("room", "user", "decided_by")
    date_hierarchy = "asked_at"
    actions = ("let_in", "turn_away")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[JoinRequest], *, admit: bool
    ) -> None:
        def done(count: int) -> str:
            if admit:
                message = ngettext("Let %(count)d person in.", "Let %(count)d people in.", count)
            else:
                message = ngettext(
                    "Turned %(count)d person away.", "Turned %(count)d people away.", count
                )
            return message % {"count": count}

        self._each(
            request,
            list(queryset),
            lambda r: services.join_requests_decide(
                room_id=r.room_id, user_id=r.user_id, admit=admit, by_user=request.user
            ),
            lambda r: r.display_name,
            done,
        )

    @admin.action(description=_("Let in"), permissions=("moderate",))
    def let_in(self, request: HttpRequest, queryset: QuerySet[JoinRequest]) -> None:
        self._decide(request, queryset, admit=True)

    @admin.action(description=_("Turn away"), permissions=("moderate",))
    def turn_away(self, request: HttpRequest, queryset: QuerySet[JoinRequest]) -> None:
        self._decide(request, queryset, admit=False)


@admin.register(RoomRemoval)
class RoomRemovalAdmin(ModerationActions, admin.ModelAdmin):
    """Who a moderator removed from a room's meeting (and who is banned from it): written by the
    services only; staff let them back in (deleting the row does the same)."""

    list_display = ("room", "user", "banned", "removed_by", "created_at")
    list_filter = ("banned", "created_at")
    search_fields = ("user__username", "user__display_name", "room__name", "room__slug")
    list_select_related = ("room", "user", "removed_by")
    date_hierarchy = "created_at"
    actions = ("let_back_in",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def _lift(self, request: HttpRequest, removal: RoomRemoval) -> bool:
        return services.removal_lift(
            room_id=removal.room_id, user_id=removal.user_id, by_user=request.user
        )

    @admin.action(description=_("Let back in"), permissions=("moderate",))
    def let_back_in(self, request: HttpRequest, queryset: QuerySet[RoomRemoval]) -> None:
        self._each(
            request,
            list(queryset.select_related("user")),
            lambda removal: self._lift(request, removal),
            lambda removal: str(removal.user),
            lambda n: (
                ngettext("Let %(count)d person back in.", "Let %(count)d people back in.", n)
                % {"count": n}
            ),
        )

    def delete_model(self, request: HttpRequest, obj: RoomRemoval) -> None:
        self._lift(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RoomRemoval]) -> None:
        for removal in queryset:
            self._lift(request, removal)


class RecordingTrackInline(_ReadOnlyInline):
    model = RecordingTrack
    fields = ("label", "source", "file", "started_at", "ended_at")
    readonly_fields = fields
    show_change_link = False


class _FileAdmin(admin.ModelAdmin):
    """Files the product made or was given (recordings, uploaded videos): staff see and delete
    them, nothing else; deleting the row deletes the file (rooms.signals)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description=_("length"))
    def length(self, obj: Recording | RoomVideo) -> str:
        return obj.length or "—"

    @admin.display(description=_("size"), ordering="size")
    def size_shown(self, obj: Recording | RoomVideo) -> str:
        return filesizeformat(obj.size) if obj.size else "—"


@admin.register(Recording)
class RecordingAdmin(_FileAdmin):
    """Every room's recordings: staff download them and delete them (with their files). They are
    made in the meeting only (a moderator's Start recording)."""

    list_display = ("room", "started_at", "state", "length", "size_shown", "started_by", "download")
    list_filter = ("state", "started_at")
    search_fields = ("room__name", "room__slug", "started_by__username")
    list_select_related = ("room", "started_by")
    date_hierarchy = "started_at"
    inlines = (RecordingTrackInline,)
    fields = (
        "room",
        "state",
        "started_by",
        "started_at",
        "stopped_by",
        "ended_at",
        "length",
        "size_shown",
        "download",
        "error",
    )
    readonly_fields = fields

    @admin.display(description=_("file"))
    def download(self, recording: Recording) -> str:
        if recording.state != Recording.State.READY:
            return "—"
        url = reverse("rooms:recording_download", args=[recording.room.slug, recording.pk])
        return format_html('<a href="{}">{}</a>', url, gettext("Download"))


@admin.register(RoomVideo)
class RoomVideoAdmin(_FileAdmin):
    """The videos rooms' owners uploaded to play into their meetings: staff see and delete them
    (with their files). They are uploaded on the room's recordings page."""

    list_display = ("title", "room", "uploaded_at", "length", "size_shown", "uploaded_by")
    search_fields = ("title", "room__name", "room__slug", "uploaded_by__username")
    list_select_related = ("room", "uploaded_by")
    date_hierarchy = "uploaded_at"
    fields = ("title", "room", "uploaded_by", "uploaded_at", "length", "size_shown", "file")
    readonly_fields = fields
