"""Root URLs: the landing page, accounts, rooms and the admin."""

from django.contrib import admin
from django.urls import include, path

from rooms import views as room_views

urlpatterns = [
    path("", room_views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("rooms/", include("rooms.urls")),
    path("admin/", admin.site.urls),
]
