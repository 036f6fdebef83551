from django.urls import path

from rooms import views

app_name = "rooms"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("new/", views.room_create, name="create"),
    path("live/", views.rooms_live, name="live"),  # room slugs always end in -xxxxxx
    path("<slug:slug>/", views.room_detail, name="detail"),
    path("<slug:slug>/presence/", views.room_presence, name="presence"),
    path("<slug:slug>/edit/", views.room_edit, name="edit"),
    path("<slug:slug>/delete/", views.room_delete, name="delete"),
    path("<slug:slug>/lock/", views.room_lock, name="lock"),
    path("<slug:slug>/invite/reset/", views.room_invite_reset, name="invite_reset"),
    path("<slug:slug>/recordings/", views.recordings, name="recordings"),
    path(
        "<slug:slug>/recordings/<int:recording_id>/download/",
        views.recording_download,
        name="recording_download",
    ),
    path(
        "<slug:slug>/recordings/<int:recording_id>/delete/",
        views.recording_delete,
        name="recording_delete",
    ),
    path("<slug:slug>/videos/", views.video_upload, name="video_upload"),
    path("<slug:slug>/videos/<int:video_id>/delete/", views.video_delete, name="video_delete"),
]
