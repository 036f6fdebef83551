"""Room pages: landing, lobby, create, edit, delete, and the room itself."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from rooms import selectors, services
from rooms.forms import RoomForm
from rooms.invites import invite_token
from rooms.models import Room
from signaling.protocol import close_codes

_INVITES_SESSION_KEY = "room_invites"
_STATUS_FOR_REFUSAL = {"closed": 410, "private": 403}


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("rooms:lobby")
    return render(request, "home.html")


def _room_or_404(slug: str) -> Room:
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise Http404("No such room.")
    return room


def _owned_room(request: HttpRequest, slug: str) -> Room:
    room = _room_or_404(slug)
    if not selectors.room_is_managed_by(room=room, user=request.user):
        raise PermissionDenied("Only the room's owner can do that.")
    return room


@login_required
def lobby(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:80]
    public = Paginator(selectors.rooms_public(search=search), 20).get_page(request.GET.get("page"))
    return render(
        request,
        "rooms/lobby.html",
        {"public_rooms": public, "my_rooms": selectors.rooms_owned(user=request.user), "q": search},
    )


@login_required
def room_create(request: HttpRequest) -> HttpResponse:
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        room = services.room_create(owner=request.user, **form.cleaned_data)
        messages.success(request, f"Room “{room.name}” created.")
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form, "creating": True})


_ALREADY_HERE_SHOWN = 5


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
    present = list(selectors.participants_live(room=room))
    others = [p.display_name for p in present if p.user_id != request.user.pk]
    return render(
        request,
        "rooms/room_detail.html",
        {
            "room": room,
            "is_owner": is_owner,
            "invite_url": invite_url,
            "already_here": others[:_ALREADY_HERE_SHOWN],
            "already_here_more": max(0, len(others) - _ALREADY_HERE_SHOWN),
            "also_here_yourself": any(p.user_id == request.user.pk for p in present),
            "client_config": {
                "wsPath": ws_path,
                "closeCodes": close_codes.for_browser(),
                "lobbyUrl": reverse("rooms:lobby"),
                "userId": request.user.pk,
            },
        },
    )


@login_required
def room_edit(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    form = RoomForm(request.POST or None, instance=room)
    if request.method == "POST" and form.is_valid():
        services.room_update(
            room=room, **{name: form.cleaned_data[name] for name in form.changed_data}
        )
        messages.success(request, "Room saved.")
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form, "room": room, "creating": False})


@login_required
def room_delete(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    if request.method == "POST":
        name = room.name
        services.room_delete(room=room)
        messages.success(request, f"Room “{name}” deleted.")
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
    messages.success(request, "Room locked: nobody new can join." if locked else "Room unlocked.")
    return redirect(room)


@login_required
@require_POST
def room_invite_reset(request: HttpRequest, slug: str) -> HttpResponse:
    room = _owned_room(request, slug)
    services.room_reset_invite(room=room)
    messages.success(request, "New invite link made; earlier links no longer work.")
    return redirect(room)
