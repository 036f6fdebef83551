"""Room pages: landing, lobby, create, edit, delete, the room itself and its recordings; and the
JSON the lobby and the pre-join screen poll for who is in."""

import functools
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.core.validators import slug_re
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from rooms import selectors, services
from rooms.forms import RoomForm, VideoUploadForm
from rooms.invites import invite_token
from rooms.models import Recording, Room
from signaling.protocol import close_codes
from signaling.protocol.collaboration import REACTION_EMOJI

_INVITES_SESSION_KEY = "room_invites"
_STATUS_FOR_REFUSAL = {"closed": 410, "private": 403}
# The most rooms one rooms:live request answers for (lobby.js asks in batches of this size).
_LIVE_ROOMS_MAX = 100
# Pieces of the rooms parameter looked at, at most: a hostile query costs no more than this.
_LIVE_PIECES_READ = 4 * _LIVE_ROOMS_MAX
_SLUG_MAX_LENGTH = Room._meta.get_field("slug").max_length
# What each reaction button says to screen readers and in its tooltip.
_REACTION_LABELS = {
    "👍": gettext_lazy("Thumbs up"),
    "👏": gettext_lazy("Applause"),
    "😂": gettext_lazy("Laughing"),
    "😮": gettext_lazy("Surprised"),
    "❤️": gettext_lazy("Love"),
    "🎉": gettext_lazy("Celebrate"),
}


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("rooms:lobby")
    return render(request, "home.html")


def _room_or_404(slug: str) -> Room:
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise Http404(gettext("No such room."))
    return room


def _owned_room(request: HttpRequest, slug: str) -> Room:
    room = _room_or_404(slug)
    if not selectors.room_is_managed_by(room=room, user=request.user):
        raise PermissionDenied(gettext("Only the room's owner can do that."))
    return room


@login_required
def lobby(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:80]
    public = Paginator(selectors.rooms_public(search=search), 20).get_page(request.GET.get("page"))
    return render(
        request,
        "rooms/lobby.html",
        {
            "public_rooms": public,
            "my_rooms": selectors.rooms_owned(user=request.user),
            "q": search,
            "lobby_config": {  # static/js/lobby.js
                "liveUrl": reverse("rooms:live"),
                "maxRooms": _LIVE_ROOMS_MAX,
                "labels": {
                    "full": gettext("Full"),
                    "locked": gettext("Locked"),
                    "closed": gettext("Closed"),
                },
            },
        },
    )


def _login_required_json(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """login_required for what pages fetch: a JSON refusal, not a redirect to the login form."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "login_required"}, status=403)
        return view(request, *args, **kwargs)

    return wrapped


def _asked_slugs(rooms: str) -> list[str]:
    """The distinct well-formed slugs of a comma-separated list, at most _LIVE_ROOMS_MAX of them;
    anything else in it is ignored."""
    slugs: dict[str, None] = {}
    for piece in rooms.split(",", _LIVE_PIECES_READ)[:_LIVE_PIECES_READ]:
        if len(slugs) == _LIVE_ROOMS_MAX:
            break
        if len(piece) <= _SLUG_MAX_LENGTH and slug_re.match(piece):
            slugs[piece] = None
    return list(slugs)


@never_cache
@require_GET
@_login_required_json
def rooms_live(request: HttpRequest) -> HttpResponse:
    """Live counts for the lobby's cards: `?rooms=slug,slug,...`. A room the user may not see
    in the lobby (someone else's private room) is left out, as is an unknown one."""
    rooms = selectors.rooms_in_lobby(
        user=request.user, slugs=_asked_slugs(request.GET.get("rooms", ""))
    )
    return JsonResponse(
        {
            "rooms": {
                room.slug: {
                    "count": room.live_count,
                    "max": room.max_participants,
                    "locked": room.locked,
                    "closed": room.is_closed,
                }
                for room in rooms
            }
        }
    )


@login_required
def room_create(request: HttpRequest) -> HttpResponse:
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        room = services.room_create(owner=request.user, **form.cleaned_data)
        messages.success(request, gettext("Room “%(name)s” created.") % {"name": room.name})
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form, "creating": True})


@login_required
def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    room = _room_or_404(slug)
    invites: dict[str, str] = request.session.get(_INVITES_SESSION_KEY, {})
    if "invite" in request.GET:
        # Keep the token in the session and drop it from the address bar.
        invites = {**invites, room.slug: request.GET["invite"]}
        request.session[_INVITES_SESSION_KEY] = invites
        return redirect(room)
    invite = invites.get(room.slug)
    refusal = selectors.room_access_refusal(room=room, user=request.user, invite=invite)
    if refusal is not None:
        return render(
            request,
            "rooms/room_unavailable.html",
            {"room": room, "refusal": refusal},
            status=_STATUS_FOR_REFUSAL.get(refusal.reason, 403),
        )
    is_owner = selectors.room_is_managed_by(room=room, user=request.user)
    ws_path = f"/ws/rooms/{room.slug}/"  # signaling.routing
    if invite and not is_owner:
        ws_path += "?" + urlencode({"invite": invite})
    invite_url = None
    if is_owner and room.is_private:
        invite_url = request.build_absolute_uri(
            f"{room.get_absolute_url()}?{urlencode({'invite': invite_token(room)})}"
        )
    # Who is already in, for the pre-join screen (the page's live list takes over once joined).
    presence = selectors.room_presence(room=room, user=request.user)
    asks_to_join = selectors.room_needs_admission(room=room, user=request.user)
    return render(
        request,
        "rooms/room_detail.html",
        {
            "room": room,
            "is_owner": is_owner,
            "invite_url": invite_url,
            "already_here": presence.others_shown,
            "already_here_more": presence.others_more,
            "also_here_yourself": presence.you_elsewhere,
            "asks_to_join": asks_to_join,
            "being_recorded": selectors.recording_running(room_id=room.pk) is not None,
            # What the owner (or staff) can play into the meeting; None: they may not.
            "playable": (
                selectors.playable_for(room=room, user=request.user)
                if selectors.room_recordings_visible_to(room=room, user=request.user)
                else None
            ),
            # A public room's address, to share from the room's details (private: invite_url).
            "room_url": (
                None if room.is_private else request.build_absolute_uri(room.get_absolute_url())
            ),
            "reactions": [(emoji, _REACTION_LABELS[emoji]) for emoji in REACTION_EMOJI],
            "client_config": {
                "wsPath": ws_path,
                "closeCodes": close_codes.for_browser(),
                "presenceUrl": reverse("rooms:presence", args=[room.slug]),
                "alsoHere": presence.you_elsewhere,
                "lobbyUrl": reverse("rooms:lobby"),
                "userId": request.user.pk,
                "isOwner": is_owner,
                "asksToJoin": asks_to_join,
            },
        },
    )


@never_cache
@require_GET
@_login_required_json
def room_presence(request: HttpRequest, slug: str) -> HttpResponse:
    """Who is in the room now, for its pre-join screen; on the room page's own terms (the
    invite kept in the session, the same refusals and statuses)."""
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        return JsonResponse({"error": "not_found"}, status=404)
    invite = request.session.get(_INVITES_SESSION_KEY, {}).get(room.slug)
    refusal = selectors.room_access_refusal(room=room, user=request.user, invite=invite)
    if refusal is not None:
        return JsonResponse(
            {"error": refusal.reason}, status=_STATUS_FOR_REFUSAL.get(refusal.reason, 403)
        )
    presence = selectors.room_presence(room=room, user=request.user)
    return JsonResponse(
        {
            "count": presence.count,
            "names": list(presence.others_shown),
            "more": presence.others_more,
            "you_elsewhere": presence.you_elsewhere,
            # Said before anyone joins: people decide whether to join a recorded meeting.
            "recording": selectors.recording_running(room_id=room.pk) is not None,
        }
    )


@login_required
def room_edit(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    form = RoomForm(request.POST or None, instance=room)
    if request.method == "POST" and form.is_valid():
        services.room_update(
            room=room, **{name: form.cleaned_data[name] for name in form.changed_data}
        )
        messages.success(request, gettext("Room saved."))
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form, "room": room, "creating": False})


@login_required
def room_delete(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    if request.method == "POST":
        name = room.name
        services.room_delete(room=room)
        messages.success(request, gettext("Room “%(name)s” deleted.") % {"name": name})
        return redirect("rooms:lobby")
    return render(request, "rooms/room_confirm_delete.html", {"room": room})


@login_required
@require_POST
def room_lock(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    locked = request.POST.get("locked") == "true"
    services.room_update(room=room, locked=locked)
    if "application/json" in request.headers.get("Accept", ""):
        # The room page locks in place (its socket stays open); room_updated redraws it.
        return JsonResponse({"locked": locked})
    messages.success(
        request,
        gettext("Room locked: nobody new can join.") if locked else gettext("Room unlocked."),
    )
    return redirect(room)


@login_required
@require_POST
def room_invite_reset(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    services.room_reset_invite(room=room)
    messages.success(request, gettext("New invite link made; earlier links no longer work."))
    return redirect(room)


# --- Recordings: the owner's (and staff's) ---------------------------------------------------
def _recordings_room(request: HttpRequest, slug: str) -> Room:
    """The room, for someone who may see its recordings; 404 for anyone else, who need not
    learn that it has any."""
    room = _room_or_404(slug)
    if not selectors.room_recordings_visible_to(room=room, user=request.user):
        raise Http404(gettext("No such room."))
    return room


def _recording_or_404(request: HttpRequest, slug: str, recording_id: int) -> Recording:
    room = _recordings_room(request, slug)
    recording = selectors.recording_for(room=room, recording_id=recording_id, user=request.user)
    if recording is None:
        raise Http404(gettext("No such recording."))
    return recording


@login_required
@never_cache
def recordings(request: HttpRequest, slug: str) -> HttpResponse:
    room = _recordings_room(request, slug)
    listed = list(selectors.recordings_of(room=room))
    return render(
        request,
        "rooms/recordings.html",
        {
            "room": room,
            "recordings": listed,
            "videos": selectors.videos_of(room=room),
            "upload_form": VideoUploadForm(),
            # Refresh the page while one is being prepared, so its Download appears.
            "preparing": any(r.state == Recording.State.COMPOSING for r in listed),
        },
    )


@login_required
@require_GET
def recording_download(request: HttpRequest, slug: str, recording_id: int) -> HttpResponse:
    recording = _recording_or_404(request, slug, recording_id)
    path = Path(settings.RECORDINGS_DIR) / recording.file
    if recording.state != Recording.State.READY or not recording.file or not path.is_file():
        raise Http404(gettext("This recording has no file to download yet."))
    filename = f"{slugify(recording.room.name) or 'meeting'}-{recording.started_at:%Y%m%d-%H%M}.mp4"
    prefix = settings.RECORDINGS_X_ACCEL_PREFIX
    if prefix:  # nginx sends the file (deploy/nginx.conf): the worker is free at once
        response = HttpResponse(content_type="video/mp4")
        response["X-Accel-Redirect"] = f"{prefix.rstrip('/')}/{quote(recording.file)}"
        response["Content-Disposition"] = content_disposition_header(True, filename)
        return response
    return FileResponse(path.open("rb"), as_attachment=True, filename=filename)


@login_required
@require_POST
def recording_delete(request: HttpRequest, slug: str, recording_id: int) -> HttpResponse:
    recording = _recording_or_404(request, slug, recording_id)
    try:
        services.recording_delete(recording=recording, by_user=request.user)
    except services.ActionRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, gettext("Recording deleted."))
    return redirect("rooms:recordings", slug=slug)


# --- Videos to play into a meeting: the owner's (and staff's) --------------------------------
@login_required
@require_POST
def video_upload(request: HttpRequest, slug: str) -> HttpResponse:
    room = _recordings_room(request, slug)
    form = VideoUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("rooms:recordings", slug=slug)
    try:
        services.video_add(
            room=room,
            by_user=request.user,
            upload=form.cleaned_data["file"],
            title=form.cleaned_data["title"],
        )
    except services.ActionRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, gettext("Video uploaded: play it from the call, Room menu."))
    return redirect("rooms:recordings", slug=slug)


@login_required
@require_POST
def video_delete(request: HttpRequest, slug: str, video_id: int) -> HttpResponse:
    room = _recordings_room(request, slug)
    video = selectors.video_for(room=room, video_id=video_id, user=request.user)
    if video is None:
        raise Http404(gettext("No such video."))
    try:
        services.video_delete(video=video, by_user=request.user)
    except services.ActionRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, gettext("Video deleted."))
    return redirect("rooms:recordings", slug=slug)
