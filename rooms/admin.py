"""Admin for rooms (with live counts and a close action), and read-only, for each room, the
join/leave history and the chat."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from rooms import selectors, services
from rooms.models import ChatMessage, Participant, Room


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
    list_filter = (OpenClosedFilter, "visibility", "locked", "screen_sharing", "created_at")
    search_fields = ("name", "slug", "description", "owner__username", "owner__display_name")
    readonly_fields = (
        "slug",
        "created_at",
        "updated_at",
        "closed_at",
        "live_count",
        "history",
        "chat",
    )
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    actions = ("close_rooms", "reopen_rooms")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return selectors.rooms_with_live_count()

    @admin.display(description=_("Live participants"), ordering="live_count")
    def live_count(self, room: Room) -> int:
        return room.live_count

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


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    """The join/leave history: read-only, written only by the signaling services."""

    list_display = ("display_name", "user", "room", "state", "joined_at", "left_at", "duration")
    list_filter = ("state", "joined_at")
    search_fields = ("display_name", "user__username", "room__name", "room__slug")
    list_select_related = ("user", "room")
    date_hierarchy = "joined_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

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
