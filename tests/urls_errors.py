"""The product's URLs plus one view that fails, for the 500 page tests (test_error_pages.py)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from conference.urls import urlpatterns as product_urlpatterns


class DeliberateFailure(RuntimeError):
    """Raised by `fail`, so a test can tell it from a real bug."""


def fail(request: HttpRequest) -> HttpResponse:
    raise DeliberateFailure("a view failed on purpose")


urlpatterns = [*product_urlpatterns, path("test-only/fail/", fail, name="test_fail")]
