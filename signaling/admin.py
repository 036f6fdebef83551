"""Admin: where each room's media lives (which media server, which pipeline), read-only."""

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from signaling.models import MediaEndpoint, RoomPipeline


class ReadOnlyAdmin(admin.ModelAdmin):
    """The media server owns these objects; the product only records their ids."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RoomPipeline)
class RoomPipelineAdmin(ReadOnlyAdmin):
    list_display = ("room", "server_url", "endpoint_count", "pipeline_id", "created_at")
    list_filter = ("server_url",)
    search_fields = ("room__name", "room__slug", "server_url", "pipeline_id")
    list_select_related = ("room",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoomPipeline]:
        return super().get_queryset(request).annotate(endpoint_count=Count("endpoints"))

    @admin.display(description="endpoints", ordering="endpoint_count")
    def endpoint_count(self, obj: RoomPipeline) -> int:
        return obj.endpoint_count  # type: ignore[attr-defined]


@admin.register(MediaEndpoint)
class MediaEndpointAdmin(ReadOnlyAdmin):
    list_display = ("endpoint_id", "owner", "publisher", "pipeline", "created_at")
    list_select_related = ("owner", "publisher", "pipeline__room")
    search_fields = ("endpoint_id", "owner__display_name")
