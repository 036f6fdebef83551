"""Root URLs: the landing page, accounts, rooms and the admin."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.cache import cache_page
from django.views.decorators.vary import vary_on_headers
from django.views.i18n import JavaScriptCatalog

from accounts import views as account_views
from rooms import views as room_views


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect(static("img/favicon.svg"))


# The browser's strings (static/js/i18n.js): Django's JavaScript catalog of the djangojs domain
# (locale/<lang>/LC_MESSAGES/djangojs.po, compiled). It depends on the language only: the server
# caches one per language (Django keys the cache by the active language), browsers keep it for
# an hour, and base.html asks for it with the language in its address (a switch is a new one).
javascript_catalog = vary_on_headers("Cookie", "Accept-Language")(
    cache_page(60 * 60, key_prefix="jsi18n")(JavaScriptCatalog.as_view(domain="djangojs"))
)

urlpatterns = [
    path("favicon.ico", favicon),
    path("", room_views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("rooms/", include("rooms.urls")),
    path("admin/", admin.site.urls),
    path("jsi18n/", javascript_catalog, name="javascript-catalog"),
    # Django's set_language, which also saves a logged-in user's choice (accounts/views.py).
    path("i18n/setlang/", account_views.set_language, name="set_language"),
]
