"""Middleware that answers one path ahead of the rest of the stack (before ALLOWED_HOSTS and the
HTTPS redirect apply): for load balancers and scrapers that reach each worker by its address
over plain HTTP (`/healthz`, `/metrics`). The answer must build no URL from the Host header."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class EarlyAnswerMiddleware:
    """Subclasses set `path` and implement `answer`."""

    path: ClassVar[str]
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response  # always async: this middleware is async only
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == self.path:
            return await self.answer(request)
        return await self.get_response(request)

    async def answer(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError
