"""Choosing the camera, microphone and speaker (static/js/devices.js), in real Chromium.

Chromium's fake capture (`--use-fake-device-for-media-stream`) lists one camera
(`fake_device_0`), three microphones ("Fake Default Audio Input", "Fake Audio Input 1" and 2)
and three speakers ("Fake Default Audio Output", "Fake Audio Output 1" and 2). Its
`device-count=2` option adds `fake_device_1`, but WebRTC encodes no frame from that one (tried:
a peer connection sending it, from the start or after replaceTrack, counts zero frames; it is a
depth-format fake device), so it cannot stand for a second camera here.

So a test-only init script (EXTRA_CAMERA) adds a second camera to `navigator.mediaDevices`:
`enumerateDevices()` lists it and `getUserMedia()` with its deviceId answers with a track from a
canvas (`captureStream`) that draws a moving picture. The page's switching logic runs unchanged:
it asks for the device by id and puts the track it gets on the same sender. The same script
"unplugs" a device, as Chromium cannot unplug a fake one: hides it from `enumerateDevices()`,
ends its live tracks (stop, then an `ended` event, as a real unplug ends them) and dispatches
`devicechange`, which is what the page sees when a device really goes.
"""

from __future__ import annotations

import time

import pytest

from tests.browser import WAIT_MS, Caller, people_of, wait_until

pytestmark = pytest.mark.browser

CAMERA_2 = "Test camera 2 (canvas)"

# Test only: a second camera, and devices that can be unplugged (see the module's docstring).
EXTRA_CAMERA = """
(() => {
  const media = navigator.mediaDevices;
  if (!media) return;
  const ID = 'test-camera-2';
  const LABEL = '__LABEL__';
  const gone = new Set();
  const tracks = [];
  const enumerate = media.enumerateDevices.bind(media);
  const getUserMedia = media.getUserMedia.bind(media);
  media.enumerateDevices = async () => {
    const list = await enumerate();
    const last = list.map((d) => d.kind).lastIndexOf('videoinput');
    const extra = {deviceId: ID, groupId: ID, kind: 'videoinput', label: LABEL};
    extra.toJSON = () => ({...extra});
    list.splice(last + 1, 0, extra);
    return list.filter((d) => !gone.has(d.label));
  };
  function canvasTrack() {
    const canvas = Object.assign(document.createElement('canvas'), {width: 640, height: 480});
    const context = canvas.getContext('2d');
    let n = 0;
    const draw = () => {
      n += 1;
      context.fillStyle = `hsl(${(n * 3) % 360} 70% 60%)`;
      context.fillRect(0, 0, 640, 480);
      context.fillStyle = '#fff';
      context.fillRect((n * 8) % 560, 200, 80, 80);
    };
    draw();
    const timer = setInterval(draw, 33);
    const track = canvas.captureStream(30).getVideoTracks()[0];
    const stop = track.stop.bind(track);
    const settings = track.getSettings.bind(track);
    Object.defineProperty(track, 'label', {value: LABEL});
    track.getSettings = () => ({...settings(), deviceId: ID});
    track.stop = () => { clearInterval(timer); stop(); };
    return track;
  }
  const chosen = (video) => [video?.deviceId, video?.deviceId?.exact].includes(ID);
  media.getUserMedia = async (constraints = {}) => {
    let stream;
    if (constraints.video && chosen(constraints.video)) {
      if (gone.has(LABEL)) throw new DOMException('No such camera', 'OverconstrainedError');
      stream = constraints.audio
        ? await getUserMedia({audio: constraints.audio})
        : new MediaStream();
      stream.addTrack(canvasTrack());
    } else {
      stream = await getUserMedia(constraints);
    }
    tracks.push(...stream.getTracks());
    return stream;
  };
  window.__unplug = (label) => {
    gone.add(label);
    for (const track of tracks) {
      if (track.label !== label || track.readyState !== 'live') continue;
      track.stop();
      track.dispatchEvent(new Event('ended'));
    }
    media.dispatchEvent(new Event('devicechange'));
  };
})();
""".replace("__LABEL__", CAMERA_2)

# Remember the publishing connection (the one that sends tracks) and its negotiated offer.
MARK_PUBLISHING = """() => {
  const pc = window.__pcs.find(
    (pc) => pc.connectionState === 'connected' && pc.getSenders().some((s) => s.track));
  window.__publishing = pc;
  window.__publishingSdp = pc.localDescription.sdp;
  window.__connectionsBefore = window.__pcs.length;
}"""

# The publishing connection now: still the same, not renegotiated, and what it sends.
PUBLISHING = """async () => {
  const pc = window.__publishing;
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') frames += r.framesEncoded || 0;
  });
  const sent = (kind) => pc.getSenders().find((s) => s.track?.kind === kind)?.track;
  const local = document.querySelector('.tile--local video').srcObject;
  return {
    state: pc.connectionState,
    frames,
    sameOffer: pc.localDescription.sdp === window.__publishingSdp,
    newConnections: window.__pcs.length - window.__connectionsBefore,
    video: sent('video')?.label,
    audio: sent('audio')?.label,
    audioEnabled: sent('audio')?.enabled,
    localVideo: local.getVideoTracks().map((t) => t.label),
    localAudio: local.getAudioTracks().map((t) => [t.label, t.enabled]),
  };
}"""

LOCAL_TRACKS = """() => {
  const stream = document.querySelector('.tile--local video')?.srcObject;
  return stream ? stream.getTracks().map((t) => `${t.kind}:${t.label}:${t.readyState}`) : [];
}"""


@pytest.fixture
def callers(chromium, product):
    with people_of(Caller, chromium, product) as make:
        yield make


def with_two_cameras(caller: Caller) -> Caller:
    caller.context.add_init_script(EXTRA_CAMERA)
    return caller


def options(page, select: str) -> list[str]:
    return page.locator(f"{select} option").all_inner_texts()


def option_value(page, select: str, label: str) -> str:
    value = page.locator(f"{select} option", has_text=label).first.get_attribute("value")
    assert value, label
    return value


def publishing(caller: Caller) -> dict:
    return caller.page.evaluate(PUBLISHING)


def frames_flow(caller: Caller, frames: int = 30) -> None:
    """The publishing connection keeps encoding video: `frames` more from now."""
    start = publishing(caller)["frames"]
    wait_until("more video frames sent", lambda: publishing(caller)["frames"] >= start + frames)


def test_pick_devices_before_and_during_the_call_and_keep_the_choice(callers):
    ada, grace = (
        callers("devada", "Ada Lovelace"),
        with_two_cameras(callers("devgrace", "Grace Hopper")),
    )
    room_url = ada.create_room("Devices room")
    page = grace.page
    page.goto(room_url)

    # The pre-join screen: three labelled pickers, listing the devices by name, and a meter.
    page.wait_for_selector("#devices-panel:visible", timeout=WAIT_MS)
    page.wait_for_function(
        "document.querySelectorAll('#camera-select option').length === 2", timeout=WAIT_MS
    )
    assert options(page, "#camera-select") == ["fake_device_0", CAMERA_2]
    assert options(page, "#microphone-select") == [
        "Fake Default Audio Input",
        "Fake Audio Input 1",
        "Fake Audio Input 2",
    ]
    assert "Fake Audio Output 1" in options(page, "#speaker-select")
    for label, select in (
        ("Camera", "camera"),
        ("Microphone", "microphone"),
        ("Speaker", "speaker"),
    ):
        assert page.get_by_label(label, exact=True).get_attribute("id") == f"{select}-select"
    assert page.get_attribute("#devices-button", "aria-expanded") == "true"

    # The level meter follows Chromium's fake microphone, which beeps: up, and down again.
    page.wait_for_selector(".devices__level:visible", timeout=WAIT_MS)
    levels = []
    for _ in range(40):
        levels.append(page.evaluate("document.getElementById('microphone-level').value"))
        time.sleep(0.1)
    assert max(levels) > 0.3 and max(levels) - min(levels) > 0.2, levels

    # Picking a microphone before joining: the preview uses it, and the meter follows it.
    page.select_option("#microphone-select", label="Fake Audio Input 1")
    wait_until(
        "the preview to use the chosen microphone",
        lambda: "audio:Fake Audio Input 1:live" in page.evaluate(LOCAL_TRACKS),
    )
    page.wait_for_selector(".devices__level:visible", timeout=WAIT_MS)

    # Joining: the meter stops, the pickers fold behind the Devices button.
    grace.join()
    grace.wait_connected()
    page.wait_for_selector("#devices-panel", state="hidden", timeout=WAIT_MS)
    assert page.is_hidden(".devices__level")
    assert page.get_attribute("#devices-button", "aria-expanded") == "false"
    ada.wait_video_from(grace)
    grace.wait_video_from(ada)
    page.evaluate(MARK_PUBLISHING)
    ada_connections = ada.connections_made()
    assert publishing(grace)["video"] == "fake_device_0"

    # Another camera during the call: the same connection, never renegotiated, sends it.
    page.focus("#devices-button")  # the pickers open from the keyboard too
    page.keyboard.press("Enter")
    page.wait_for_selector("#devices-panel:visible", timeout=WAIT_MS)
    page.select_option("#camera-select", label=CAMERA_2)
    wait_until("the camera to switch", lambda: publishing(grace)["video"] == CAMERA_2)
    frames_flow(grace)
    now = publishing(grace)
    assert now["state"] == "connected" and now["sameOffer"] and now["newConnections"] == 0, now
    assert now["localVideo"] == [CAMERA_2], now
    ada.wait_video_from(grace)  # the others keep seeing her, on the connection they had
    assert ada.connections_made() == ada_connections

    # A muted microphone stays muted on the new one.
    page.click("#mic-button")
    page.select_option("#microphone-select", label="Fake Audio Input 2")
    wait_until(
        "the microphone to switch", lambda: publishing(grace)["audio"] == "Fake Audio Input 2"
    )
    now = publishing(grace)
    assert now["audioEnabled"] is False and now["localAudio"] == [["Fake Audio Input 2", False]]
    assert now["sameOffer"] and now["newConnections"] == 0, now
    assert page.get_attribute("#mic-button", "aria-pressed") == "true"

    # The speaker: the others' tiles play through it (setSinkId).
    speaker = option_value(page, "#speaker-select", "Fake Audio Output 1")
    page.select_option("#speaker-select", value=speaker)
    ada_id = ada.participant_id
    wait_until(
        "Ada's tile to play through the chosen speaker",
        lambda: (
            page.evaluate(
                f"document.querySelector('.tile[data-participant-id=\"{ada_id}\"] video').sinkId"
            )
            == speaker
        ),
    )

    # The choice is remembered: after a reload the pre-join screen uses the same devices.
    page.reload()
    page.wait_for_selector("#devices-panel:visible", timeout=WAIT_MS)
    wait_until(
        "the remembered camera and microphone",
        lambda: (
            {f"video:{CAMERA_2}:live", "audio:Fake Audio Input 2:live"}
            <= set(page.evaluate(LOCAL_TRACKS))
        ),
    )
    camera = option_value(page, "#camera-select", CAMERA_2)
    assert page.input_value("#camera-select") == camera
    assert page.input_value("#speaker-select") == speaker


def test_an_unplugged_camera_gives_way_to_another_with_a_notice(callers):
    ada = callers("unplugada", "Ada Lovelace")
    grace = with_two_cameras(callers("unpluggrace", "Grace Hopper"))
    room_url = ada.create_room("Unplug room")
    grace.open(room_url)
    grace.wait_connected()
    ada.wait_video_from(grace)
    page = grace.page
    page.click("#devices-button")
    page.select_option("#camera-select", label=CAMERA_2)
    page.evaluate(MARK_PUBLISHING)
    wait_until("the camera to switch", lambda: publishing(grace)["video"] == CAMERA_2)
    ada_connections = ada.connections_made()

    page.evaluate("(label) => window.__unplug(label)", CAMERA_2)
    page.wait_for_selector(
        f"#room-notice:has-text('{CAMERA_2} was disconnected. Now using fake_device_0.')",
        timeout=WAIT_MS,
    )
    wait_until("the other camera", lambda: publishing(grace)["video"] == "fake_device_0")
    assert options(page, "#camera-select") == ["fake_device_0"]
    frames_flow(grace)
    now = publishing(grace)
    assert now["sameOffer"] and now["newConnections"] == 0 and now["state"] == "connected", now
    assert now["localVideo"] == ["fake_device_0"], now
    ada.wait_video_from(grace)
    assert ada.connections_made() == ada_connections
