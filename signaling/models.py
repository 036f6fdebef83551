"""The web tier's only record of media objects: their ids on the media server.

Media objects belong to the media server; the database keeps their ids so that any daphne worker
can act on any room, and so that whatever a participant held can be released however it left.
"""

from django.db import models

from rooms.models import Participant, RecordingTrack, Room


class RoomPipeline(models.Model):
    """A room's MediaPipeline. One per room: the unique `room` makes a second one impossible.

    When the room is deleted the row stays with `room` unset, so that the pipeline is still
    released (see signaling.media.sweep_orphans).
    """

    room = models.OneToOneField(
        Room, on_delete=models.SET_NULL, null=True, blank=True, related_name="pipeline"
    )
    server_url = models.CharField(max_length=300)
    pipeline_id = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "media pipeline"

    def __str__(self) -> str:
        return f"{self.pipeline_id} on {self.server_url}"


class MediaEndpoint(models.Model):
    """A WebRtcEndpoint held by a participant, for one source of media (its camera and
    microphone, or a shared screen); or, for a video the participant plays into the room
    (source `playback`), the PlayerEndpoint playing it.

    `publisher` unset: the participant's own publishing endpoint for that source. Set: the
    endpoint through which the participant receives that publisher's source (connected from the
    publisher's endpoint for it).
    """

    class Source(models.TextChoices):
        CAMERA = "camera", "camera and microphone"
        SCREEN = "screen", "shared screen"
        PLAYBACK = "playback", "played video"

    pipeline = models.ForeignKey(RoomPipeline, on_delete=models.CASCADE, related_name="endpoints")
    owner = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="endpoints")
    publisher = models.ForeignKey(
        Participant,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="viewer_endpoints",
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CAMERA)
    endpoint_id = models.CharField(max_length=400)
    # A publisher's endpoint: what the publisher says it sends (its microphone or camera may be
    # switched off). A receiving one: video_on is whether the viewer wants the video (its tile
    # is on screen).
    audio_on = models.BooleanField(default=True)
    video_on = models.BooleanField(default=True)
    # A played video's publishing PlayerEndpoint: what it is called (its title).
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Per source: one publishing endpoint per participant, one receiving endpoint per
            # (subscriber, publisher) pair.
            models.UniqueConstraint(
                fields=("owner", "source"),
                condition=models.Q(publisher__isnull=True),
                name="one_publishing_endpoint_per_source",
            ),
            models.UniqueConstraint(
                fields=("owner", "publisher", "source"), name="one_endpoint_per_pair_and_source"
            ),
        ]

    def __str__(self) -> str:
        return self.endpoint_id


class MediaRecorder(models.Model):
    """A RecorderEndpoint writing one stream of a recording (a `RecordingTrack`), connected from
    the publisher's endpoint for that source. Released (which finishes its file) when the
    recording stops, the publisher stops sending, or the room's pipeline goes."""

    pipeline = models.ForeignKey(RoomPipeline, on_delete=models.CASCADE, related_name="recorders")
    track = models.OneToOneField(RecordingTrack, on_delete=models.CASCADE, related_name="recorder")
    publisher = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=8, default=MediaEndpoint.Source.CAMERA)
    recorder_id = models.CharField(max_length=400)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "media recorder"
        constraints = [
            models.UniqueConstraint(
                fields=("publisher", "source"), name="one_recorder_per_published_stream"
            )
        ]

    def __str__(self) -> str:
        return self.recorder_id
