// Call: this tab's camera and microphone, its publishing connection, one receiving connection per
// publisher in the room, and the video tiles that show them (docs/protocol.md, "Calls").
import { gettext, interpolate } from './i18n.js';
import { StageLayout } from './layout.js';
import { QualityMonitor } from './quality.js';
import { Requests } from './requests.js';
import { SpeakingMonitor } from './speaking.js';

// A connection whose media path broke is made again with new endpoints (the media server has no
// ICE restart), at once and then every few seconds while it does not connect: an attempt made
// while the network was down can never connect, so media comes back within seconds of the
// network only if the page keeps trying at that pace.
const ICE_RETRY_MS = 1_000;
// ICE "disconnected" often heals by itself (a brief loss); past this it is renegotiated.
const DISCONNECTED_GRACE_MS = 2_500;
// A first connection may take a while (TURN over TCP, a slow network); a new one after an
// interruption, on a path that worked, should not.
const CONNECT_TIMEOUT_MS = 10_000;
const RECONNECT_TIMEOUT_MS = 3_000;
// A request the server refused (the media server is unreachable, say) is retried with backoff:
// the room is told when the media server is back, and every connection starts again then.
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 15_000;
const REQUEST_TIMEOUT_MS = 20_000;
const reconnectingMedia = () => gettext('Reconnecting media…');
// A tile off screen this long stops receiving video (its sound goes on); back on screen, at once.
const OFF_SCREEN_MS = 1_500;

// A shared screen: detail over motion (the track's contentHint is "detail" too).
const SCREEN_CONSTRAINTS = {
  video: { width: { max: 1920 }, height: { max: 1080 }, frameRate: { ideal: 15, max: 15 } },
  audio: true, // the tab's or the system's sound, where the browser offers it
};
const SCREEN_MAX_BITRATE = 2_500_000;

const MEDIA_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true },
  video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
};

/** What to tell the person when the browser would not give us a camera or microphone. */
function deviceProblem(error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return gettext(
        'Camera and microphone are blocked. Allow them for this site and reload to be seen and heard; you can still see and hear the others.',
      );
    case 'NotFoundError':
    case 'OverconstrainedError':
      return gettext('No camera or microphone was found. You can still see and hear the others.');
    case 'NotReadableError':
    case 'AbortError':
      return gettext(
        'Your camera or microphone is in use by another application. You can still see and hear the others.',
      );
    default:
      return interpolate(gettext('Could not start your camera or microphone (%(error)s).'), {
        error: error?.message || error,
      });
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One video tile: the picture, the person's name, and a line for the connection's state. */
class Tile {
  #watched = new WeakSet(); // video tracks whose mute/unmute/ended events update the picture

  constructor(stage, { name, local }) {
    this.root = el('figure', `tile${local ? ' tile--local' : ''}`);
    this.video = el('video', 'tile__video');
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.muted = local; // never play back our own microphone
    this.video.setAttribute(
      'aria-label',
      local ? gettext('Your camera') : interpolate(gettext("%(name)s's video"), { name }),
    );
    this.caption = el('figcaption', 'tile__name', name);
    // Not a live region: the page announces call events once, in its own (room.js).
    this.state = el('p', 'tile__state');
    this.sound = el('button', 'button button--small tile__sound', gettext('Turn sound on'));
    this.sound.type = 'button';
    this.sound.hidden = true;
    this.sound.addEventListener('click', () => {
      this.video.muted = false;
      this.video.play().catch(() => {});
      this.sound.hidden = true;
    });
    // Shown instead of the picture while there is none (no camera, camera off, connecting).
    this.avatar = el('span', 'tile__avatar', [...(name.trim() || '?')][0].toUpperCase());
    this.avatar.setAttribute('aria-hidden', 'true');
    for (const event of ['loadeddata', 'resize', 'playing', 'emptied']) {
      this.video.addEventListener(event, () => this.#updatePicture());
    }
    this.muted = el('span', 'tile__muted', gettext('Muted'));
    this.muted.hidden = true;
    this.videoOff = false; // the person switched their camera off
    this.silenced = false; // never played back (silence())
    this.root.append(this.avatar, this.video, this.caption, this.muted, this.state, this.sound);
    if (!local) {
      // Pinned: shown large, whoever talks. Its label stays; its pressed state says pinned.
      this.pin = el('button', 'tile__pin', gettext('Pin'));
      this.pin.type = 'button';
      this.pin.setAttribute('aria-pressed', 'false');
      this.pin.setAttribute('aria-label', interpolate(gettext('Pin %(name)s'), { name }));
      this.pin.addEventListener('click', () => this.onPin?.()); // the layout marks it pressed
      this.root.append(this.pin);
    }
    stage.append(this.root);
  }

  /** The tile shows the picture only while a live, unmuted video track has one. */
  #updatePicture() {
    const track = this.video.srcObject?.getVideoTracks?.()[0];
    const live = Boolean(
      track && track.readyState === 'live' && !track.muted && this.video.videoWidth && !this.videoOff,
    );
    this.root.classList.toggle('tile--video', live);
  }

  /** Show a stream; called again as each of its tracks arrives. */
  show(stream) {
    for (const track of stream.getVideoTracks()) {
      if (this.#watched.has(track)) continue;
      this.#watched.add(track);
      for (const event of ['mute', 'unmute', 'ended']) {
        track.addEventListener(event, () => this.#updatePicture());
      }
    }
    this.#updatePicture();
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.video.play().catch(() => {
      // Autoplay with sound was refused: play muted, and offer the sound behind a click.
      this.video.muted = true;
      this.sound.hidden = this.silenced;
      this.video.play().catch(() => {});
    });
  }

  setState(state, text = '') {
    this.root.dataset.state = state;
    this.state.textContent = text;
    this.state.hidden = !text;
  }

  /** What the person says they send: a muted badge, and the avatar while the camera is off. */
  setMedia({ audio, video }) {
    this.muted.hidden = audio !== false;
    this.videoOff = video === false;
    this.#updatePicture();
  }

  /**
   * Never play this tile's sound: it is you, in another tab or on another device (its sound
   * would be your own voice, and an echo loop in the same room).
   */
  silence() {
    this.silenced = true;
    this.video.muted = true;
    this.sound.hidden = true;
    this.root.classList.add('tile--also-you');
  }

  /** Outline the tile while the person talks. */
  setSpeaking(speaking) {
    this.root.classList.toggle('tile--speaking', speaking);
  }

  /** The connection's quality: a small mark, its figures on hover and focus. */
  setQuality(level, description) {
    if (!this.quality) {
      this.quality = el('span', 'tile__quality');
      this.quality.tabIndex = 0;
      this.quality.setAttribute('role', 'img');
      this.root.append(this.quality);
    }
    this.quality.dataset.level = level;
    this.quality.title = description;
    this.quality.setAttribute('aria-label', description);
  }

  rename(name) {
    this.pin?.setAttribute('aria-label', interpolate(gettext('Pin %(name)s'), { name }));
    this.caption.textContent = name;
    this.avatar.textContent = [...(name.trim() || '?')][0].toUpperCase();
  }

  /** Back to the avatar: the person is here but sends no picture. */
  clear(text = '') {
    this.video.srcObject = null;
    this.root.classList.remove('tile--video');
    this.setState('idle', text);
  }

  remove() {
    clearTimeout(this.offScreenTimer);
    this.video.srcObject = null;
    this.root.remove();
  }
}

/** The key in `Call.links` of the connection a server message names (target and source). */
function linkKey(target, source = 'camera') {
  if (target === 'publish') return source === 'screen' ? 'share' : 'publish';
  return source === 'camera' ? target : `${source}:${target}`;
}

/**
 * A shared screen is text and lines more than motion: keep its resolution when bandwidth is
 * short (fewer frames rather than a blur), and allow it the bitrate that takes.
 */
function sharpen(sender) {
  try {
    const parameters = sender.getParameters();
    parameters.degradationPreference = 'maintain-resolution';
    for (const encoding of parameters.encodings ?? []) encoding.maxBitrate = SCREEN_MAX_BITRATE;
    sender.setParameters(parameters).catch(() => {});
  } catch {
    // an older browser: its defaults
  }
}

/** One RTCPeerConnection negotiated with one endpoint on the media server. */
class Link {
  /**
   * @param {Call} call
   * @param {string | number} target the key of this connection in `call.links`: 'publish' (your
   *   camera), 'share' (your screen), a publisher's id (their camera), `screen:<id>` (their
   *   screen) or `playback:<id>` (a video they play into the room)
   * @param {Tile} tile where its picture shows
   */
  constructor(call, target, tile) {
    this.call = call;
    this.target = target;
    this.local = target === 'publish' || target === 'share';
    const [prefix, id] = String(target).includes(':') ? String(target).split(':') : [null, target];
    this.source = target === 'share' ? 'screen' : prefix ?? 'camera';
    // Whose media, on the wire: 'publish' for your own, else the publisher's participant id.
    this.publisher = this.local ? 'publish' : Number(id);
    this.tile = tile;
    this.pc = null;
    this.closed = false;
    this.failures = 0;
    this.retryTimer = 0;
    this.pendingCandidates = [];
    this.remoteSet = false;
    this.offered = null; // settles once this connection's offer is on its way
    this.stallTimer = 0; // renegotiates a connection that stays disconnected or never connects
    this.video = tile.onScreen ?? true; // receiving: whether the server sends us the video
  }

  /** Receive the publisher's video or not (its tile came on or went off screen). */
  async setVideo(on) {
    if (this.local || this.video === on) return;
    this.video = on;
    if (!this.remoteSet || this.closed) return; // the next offer carries it
    try {
      await this.call.request({ type: 'video', publisher: this.publisher, source: this.source, on });
    } catch (error) {
      if (error?.code !== 'offline') console.warn('Could not switch a video', error);
    }
  }

  /** Negotiate afresh; `offerSent` is called as the offer leaves. */
  async open(offerSent = () => {}) {
    clearTimeout(this.retryTimer);
    clearTimeout(this.stallTimer);
    this.pc?.close();
    this.remoteSet = false;
    this.pendingCandidates = [];
    const pc = new RTCPeerConnection({ ...this.call.iceConfig });
    this.pc = pc;
    const local = this.local;
    if (local) {
      const stream = this.source === 'screen' ? this.call.screenStream : this.call.localStream;
      for (const track of stream.getTracks()) {
        const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
        if (this.source === 'screen' && track.kind === 'video') sharpen(transceiver.sender);
      }
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const stream = new MediaStream();
      pc.addEventListener('track', (event) => {
        stream.addTrack(event.track);
        this.tile.show(stream);
      });
    }
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (candidate && candidate.candidate && pc === this.pc) {
        this.call.socket.send({
          type: 'ice',
          target: this.publisher,
          source: this.source,
          candidate: candidate.toJSON(),
        });
      }
    });
    pc.addEventListener('connectionstatechange', () => this.#stateChanged(pc));
    const connecting =
      this.source === 'screen' ? gettext('Connecting the screen…') : gettext('Connecting your camera…');
    this.tile.setState('connecting', local ? connecting : gettext('Connecting…'));
    await pc.setLocalDescription(await pc.createOffer());
    const sdp = pc.localDescription.sdp;
    const { source } = this;
    const replied = this.call.request(
      local
        ? { type: 'publish', sdp, source }
        : { type: 'subscribe', publisher: this.publisher, source, sdp, video: this.video },
    );
    offerSent();
    const reply = await replied;
    if (pc !== this.pc || this.closed) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
    this.remoteSet = true;
    const timeout = this.failures > 0 ? RECONNECT_TIMEOUT_MS : CONNECT_TIMEOUT_MS;
    this.#watch(timeout, gettext('The connection is taking too long. Retrying…'));
    if (this.target === 'publish') this.call.sendMediaState();
    for (const candidate of this.pendingCandidates.splice(0)) await this.#add(candidate);
  }

  async addCandidate(candidate) {
    if (!this.remoteSet) this.pendingCandidates.push(candidate);
    else await this.#add(candidate);
  }

  async #add(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      console.warn('A candidate from the media server was refused', error);
    }
  }

  #stateChanged(pc) {
    if (pc !== this.pc || this.closed) return;
    const state = pc.connectionState;
    this.tile.root.dataset.connection = state;
    if (state === 'connected') {
      this.failures = 0;
      clearTimeout(this.stallTimer);
      clearTimeout(this.retryTimer); // a retry an older attempt asked for is moot now
      this.tile.setState('live');
      this.call.connected();
    } else if (state === 'failed') {
      this.retry(gettext('The connection failed. Reconnecting…'), { fast: true });
    } else if (state === 'disconnected') {
      // The network dropped or changed (Wi-Fi to mobile, sleep): wait a moment for ICE to
      // recover by itself, then negotiate a new connection.
      this.tile.setState('connecting', gettext('Connection interrupted…'));
      this.#watch(DISCONNECTED_GRACE_MS, gettext('Connection interrupted. Reconnecting…'));
    }
  }

  /** Renegotiate unless the connection is up `delay` ms from now. */
  #watch(delay, text) {
    clearTimeout(this.stallTimer);
    const pc = this.pc;
    this.stallTimer = setTimeout(() => {
      if (pc === this.pc && !this.closed && pc.connectionState !== 'connected') {
        this.retry(text, { fast: true, now: true }); // it waited long enough already
      }
    }, delay);
  }

  /** True while media flows (or is about to, for a connection still being negotiated). */
  get healthy() {
    const state = this.pc?.connectionState;
    return state === 'connected' || state === 'new' || state === 'connecting';
  }

  /**
   * Start again with new endpoints (the media server has no ICE restart): `fast` when the media
   * path broke (at once, then every ICE_RETRY_MS; `now` when the attempt already waited), else
   * with backoff.
   */
  retry(text, { fast = false, now = false } = {}) {
    if (this.closed) return;
    this.failures += 1;
    let delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (this.failures - 1));
    if (fast) delay = now || this.failures === 1 ? 0 : ICE_RETRY_MS;
    this.tile.setState('connecting', text);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  start() {
    let markOffered;
    this.offered = new Promise((resolve) => {
      markOffered = resolve;
    });
    const attempt = this.open(markOffered);
    const pc = this.pc; // this attempt's connection (open makes it before its first await)
    attempt
      .catch((error) => {
        // Refused after a newer attempt replaced it: that says nothing about the newer one.
        if (pc === this.pc) this.#failed(error);
      })
      .finally(markOffered);
  }

  #failed(error) {
    if (this.closed) return;
    if (error?.code === 'not_publishing') {
      this.call.dropLink(this.target); // they stopped publishing or left meanwhile
      return;
    }
    if (error?.code === 'forbidden') {
      this.call.notice(error.message); // e.g. only the owner may share a screen here
      if (this.target === 'share') this.call.stopShare();
      else this.call.dropLink(this.target);
      return;
    }
    console.warn(`Media connection ${this.target} failed`, error);
    if (error?.code === 'media_unavailable') this.call.notice(error.message);
    this.retry(
      error?.message
        ? interpolate(gettext('%(message)s Retrying…'), { message: error.message })
        : gettext('Retrying…'),
    );
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.stallTimer);
    this.pc?.close();
    this.pc = null;
  }
}

export class Call {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLElement} options.stage where the tiles go
   * @param {(text: string, options?: {persist?: boolean}) => void} options.notice shows a
   *   message to the person
   * @param {() => void} [options.healed] called when every connection a `reset` broke is up
   *   again
   * @param {(id: number | 'you', speaking: boolean) => void} [options.speaking] called when
   *   someone starts or stops talking ('you': this tab's microphone)
   * @param {object} [options.pager] the stage's page controls (layout.js)
   * @param {number | null} [options.userId] this account: its other tabs are never played back
   */
  constructor({ socket, stage, notice, healed = () => {}, speaking = () => {}, pager = null, userId = null }) {
    this.socket = socket;
    this.healed = healed;
    this.onSpeaking = speaking;
    this.userId = userId;
    this.layout = new StageLayout(stage, pager);
    this.quality = new QualityMonitor(() =>
      [...this.links.values()].filter((link) => link.pc).map((link) => [link.pc, link.tile]),
    );
    this.speaking = new SpeakingMonitor(() => this.#audioSources(), {
      onChange: (id, on) => this.#speakingChanged(id, on),
      onActive: (id) => this.layout.setActive(id),
    });
    this.healing = null; // after a reset: the targets whose connections must come back
    this.stage = stage;
    // STUN/TURN servers and policy, from the server (TURN credentials are per participant).
    this.iceConfig = { iceServers: [], iceTransportPolicy: 'all' };
    this.notice = notice;
    this.localStream = null;
    this.localTile = null;
    // The camera and microphone to ask for (deviceIds, '' for the browser's default) and the
    // speaker for the others' sound: static/js/devices.js chooses them.
    this.preferred = { audio: '', video: '' };
    this.sinkId = '';
    this.links = new Map(); // 'publish' or publisher id -> Link
    this.tiles = new Map(); // another participant's id -> Tile
    // `screen:<id>` / `playback:<id>` -> the Tile of a screen someone shares or a video they play
    this.screens = new Map();
    this.userIds = new Map(); // participant id -> their account's id
    this.screenStream = null; // the screen this tab shares
    this.screenTile = null; // and its preview
    this.onShare = () => {}; // told when this tab starts or stops sharing (true / false)
    this.names = new Map(); // participant id -> name
    this.you = null;
    // Every media request's reply (`video` is answered by `video_set`).
    const replies = ['published', 'subscribed', 'unsubscribed', 'unpublished', 'video_set'];
    this.requests = new Requests(socket, 'm', replies, REQUEST_TIMEOUT_MS);
    this.mediaAsked = null;
    socket.addEventListener('ice_candidate', (event) => {
      const { target, candidate, source } = event.detail;
      this.links.get(linkKey(target, source))?.addCandidate(candidate);
    });
  }

  /** Send a request and wait for its reply; rejects with {code, message} on an error reply. */
  request(message) {
    return this.requests.send(message);
  }

  /** What to ask getUserMedia for one kind ('audio' or 'video'): the chosen device, if any. */
  #constraints(kind, deviceId = this.preferred[kind]) {
    const base = MEDIA_CONSTRAINTS[kind];
    return deviceId ? { ...base, deviceId: { exact: deviceId } } : base;
  }

  /** Ask once for camera and microphone; fall back to whichever one exists. */
  async #localMedia() {
    if (this.preferred.audio || this.preferred.video) {
      try {
        const chosen = { audio: this.#constraints('audio'), video: this.#constraints('video') };
        return await navigator.mediaDevices.getUserMedia(chosen);
      } catch (error) {
        if (error?.name === 'NotAllowedError' || error?.name === 'SecurityError') throw error;
        // A chosen device is gone or busy: the browser's defaults, below.
      }
    }
    try {
      return await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
    } catch (error) {
      if (error?.name !== 'NotFoundError' && error?.name !== 'OverconstrainedError') throw error;
      for (const only of [{ audio: MEDIA_CONSTRAINTS.audio }, { video: MEDIA_CONSTRAINTS.video }]) {
        try {
          return await navigator.mediaDevices.getUserMedia(only);
        } catch {
          // try the other one
        }
      }
      throw error;
    }
  }

  /** New ICE servers (fresh TURN credentials): for new connections and the open ones. */
  setIce({ iceServers, iceTransportPolicy }) {
    this.iceConfig = { iceServers, iceTransportPolicy };
    for (const link of this.links.values()) {
      if (!link.pc) continue;
      try {
        link.pc.setConfiguration({ ...link.pc.getConfiguration(), iceServers });
      } catch (error) {
        console.warn('Could not update the ICE servers of a connection', error);
      }
    }
  }

  /** Ask for camera and microphone (once) and show the preview; resolves to the stream or null. */
  preview() {
    if (!navigator.mediaDevices?.getUserMedia) {
      this.notice(
        gettext(
          'This browser cannot share a camera here (it needs HTTPS or localhost). You can still see and hear the others.',
        ),
        { persist: true },
      );
      this.mediaAsked ??= Promise.resolve(null);
    }
    this.mediaAsked ??= this.#localMedia().then(
      (stream) => {
        this.localStream = stream;
        this.localTile ??= new Tile(this.stage, { name: gettext('You'), local: true });
        this.localTile.show(stream);
        return stream;
      },
      (error) => {
        this.notice(deviceProblem(error), { persist: true });
        return null;
      },
    );
    return this.mediaAsked;
  }

  /** The connections whose audio levels tell who is talking. */
  *#audioSources() {
    for (const [target, link] of this.links) {
      const local = target === 'publish';
      yield [local ? 'you' : target, link.pc, local];
    }
  }

  #speakingChanged(id, speaking) {
    const tile = id === 'you' ? this.localTile : this.tiles.get(id);
    tile?.setSpeaking(speaking);
    this.onSpeaking(id, speaking);
  }

  /** A (re)joined room: publish our media and receive everyone who publishes. */
  async start(you, participants) {
    this.stopLinks();
    this.you = you;
    this.speaking.start();
    this.quality.start();
    for (const p of participants) this.joined(p);
    for (const p of participants) if (p.publishing && p.id !== you) this.subscribe(p.id);
    for (const p of participants) if (p.sharing && p.id !== you) this.subscribeScreen(p.id);
    for (const p of participants) if (p.playing) this.subscribeScreen(p.id, 'playback', p.playing);
    const stream = await this.preview();
    // Seeing the others comes first: the server answers a socket's requests in order, so the
    // subscribe offers go out before our own publish offer (waiting at most a moment).
    const offered = [...this.links.values()].map((link) => link.offered);
    await Promise.race([Promise.allSettled(offered), new Promise((r) => setTimeout(r, 1000))]);
    if (this.you !== you) return; // rejoined meanwhile
    if (stream) this.#link('publish', this.localTile).start();
    // Still sharing from before a reconnection: share again on the new connection.
    if (this.screenStream && this.screenTile) this.#link('share', this.screenTile).start();
  }

  #link(target, tile) {
    const link = new Link(this, target, tile);
    this.links.set(target, link);
    return link;
  }

  /** The tile of another participant, made on first need. */
  #tileOf(id) {
    let tile = this.tiles.get(id);
    if (!tile) {
      tile = new Tile(this.stage, { name: this.names.get(id) || gettext('Someone'), local: false });
      tile.root.dataset.participantId = String(id);
      tile.clear(gettext('No camera'));
      this.tiles.set(id, tile);
      this.#watchVisibility(id, tile);
      if (this.sinkId) this.#applySink(tile).catch(() => {}); // the speaker chosen
      tile.onPin = () => this.layout.togglePin(id);
    }
    return tile;
  }

  /**
   * Receive a tile's video only while it is on screen (not on another page, not scrolled
   * away): what nobody sees costs nothing. `key` is the tile's connection in `links`.
   */
  #watchVisibility(key, tile) {
    this.watched ??= new WeakMap(); // tile element -> [key, Tile]
    this.visibility ??= new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const [linkKey, seen] = this.watched.get(entry.target) ?? [];
        if (!seen) continue;
        seen.onScreen = entry.isIntersecting;
        clearTimeout(seen.offScreenTimer);
        const link = () => this.links.get(linkKey);
        if (entry.isIntersecting) link()?.setVideo(true);
        else seen.offScreenTimer = setTimeout(() => link()?.setVideo(false), OFF_SCREEN_MS);
      }
    });
    tile.onScreen = true; // until the observer says otherwise
    this.watched.set(tile.root, [key, tile]);
    this.visibility.observe(tile.root);
  }

  /**
   * The tile of another participant's shared screen (`source` 'screen'), or of a video someone
   * plays into the room ('playback', called `title`), made on first need.
   */
  #screenOf(id, source, title) {
    const key = `${source}:${id}`;
    let tile = this.screens.get(key);
    if (!tile) {
      const name = id === this.you ? gettext('You') : this.names.get(id) || gettext('Someone');
      const playback = source === 'playback';
      tile = new Tile(this.stage, {
        name: playback ? title || gettext('Video') : interpolate(gettext("%(name)s's screen"), { name }),
        local: false,
      });
      tile.root.classList.add('tile--screen');
      if (playback) tile.root.classList.add('tile--playback');
      tile.root.dataset[playback ? 'playbackOf' : 'screenOf'] = String(id);
      tile.root.dataset.tileKey = key;
      tile.video.setAttribute(
        'aria-label',
        playback
          ? interpolate(gettext('Video played by %(name)s: %(title)s'), { name, title })
          : interpolate(gettext("%(name)s's shared screen"), { name }),
      );
      tile.clear(gettext('Connecting…'));
      this.screens.set(key, tile);
      this.#watchVisibility(key, tile);
      if (this.sinkId) this.#applySink(tile).catch(() => {});
      // Your own screen in another tab would echo; a video you play is heard as everyone hears it.
      if (!playback && this.userId !== null && this.userIds?.get(id) === this.userId) tile.silence();
      tile.onPin = () => this.layout.togglePin(key);
      this.layout.presented(key);
    }
    return tile;
  }

  /**
   * Receive another participant's shared screen (they started sharing, or already were), or a
   * video someone plays into the room (`source` 'playback', yourself included).
   */
  subscribeScreen(id, source = 'screen', title = '') {
    if (this.you === null || (id === this.you && source !== 'playback')) return;
    const key = `${source}:${id}`;
    const existing = this.links.get(key);
    if (existing) {
      existing.failures = 0;
      existing.start();
      return;
    }
    this.#link(key, this.#screenOf(id, source, title)).start();
  }

  /** They stopped sharing or playing (or left): that tile goes. */
  dropScreen(id, source = 'screen') {
    const key = `${source}:${id}`;
    this.dropLink(key);
    const tile = this.screens.get(key);
    if (!tile) return;
    this.visibility?.unobserve(tile.root);
    tile.remove();
    this.screens.delete(key);
  }

  /** Whether this tab shares its screen. */
  get sharing() {
    return Boolean(this.screenStream);
  }

  /**
   * Share a screen, a window or a tab (the browser asks which), with its sound where the
   * browser offers it: a second publishing connection, beside the camera's. Resolves once
   * the picker closed; rejects with the browser's error (NotAllowedError: the person
   * cancelled) or the server's ({code: 'forbidden'}: the room does not let you share).
   */
  async startShare() {
    if (this.screenStream) return;
    const stream = await navigator.mediaDevices.getDisplayMedia(SCREEN_CONSTRAINTS);
    const [video] = stream.getVideoTracks();
    if (video && 'contentHint' in video) video.contentHint = 'detail';
    // The browser's own "Stop sharing" ends the track: the same as our button.
    video?.addEventListener('ended', () => this.stopShare());
    this.screenStream = stream;
    this.screenTile = new Tile(this.stage, { name: gettext('Your screen'), local: true });
    this.screenTile.root.classList.replace('tile--local', 'tile--own-screen'); // not a mirror
    this.screenTile.root.classList.add('tile--screen');
    this.screenTile.root.dataset.tileKey = 'share';
    this.screenTile.video.setAttribute('aria-label', gettext('The screen you share'));
    this.screenTile.show(stream);
    this.layout.presented('share');
    this.onShare(true);
    if (this.you !== null) this.#link('share', this.screenTile).start();
  }

  /** Stop sharing: the connection, the server's endpoints for it, the capture. */
  stopShare() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    const publishing = this.links.get('share');
    this.dropLink('share');
    if (publishing?.remoteSet) {
      this.request({ type: 'unpublish', source: 'screen' }).catch(() => {});
    }
    for (const track of stream.getTracks()) track.stop();
    this.screenTile?.remove();
    this.screenTile = null;
    this.onShare(false);
  }

  subscribe(publisherId) {
    if (publisherId === this.you || this.you === null) return;
    const existing = this.links.get(publisherId);
    if (existing) {
      existing.failures = 0;
      existing.start(); // they published again: a new endpoint, so a new negotiation
      return;
    }
    this.#link(publisherId, this.#tileOf(publisherId)).start();
  }

  /** Someone is in the room: a tile with their name, their picture once they publish. */
  joined(participant) {
    this.names.set(participant.id, participant.name);
    this.userIds.set(participant.id, participant.user_id);
    if (participant.id === this.you || this.you === null) return;
    const tile = this.#tileOf(participant.id);
    tile.rename(participant.name);
    if (this.userId !== null && participant.user_id === this.userId) tile.silence();
    if (participant.publishing) tile.setMedia(participant);
  }

  /** Another participant switched their microphone or camera. */
  mediaChanged({ participant_id: id, audio, video }) {
    if (id !== this.you) this.tiles.get(id)?.setMedia({ audio, video });
  }

  /** A publisher stopped publishing (or cannot be reached): back to their avatar. */
  dropLink(target) {
    const link = this.links.get(target);
    if (!link) return;
    link.close();
    this.links.delete(target);
    if (!link.local && link.source === 'camera') link.tile.clear(gettext('No camera'));
  }

  /**
   * The room's media was rebuilt on the media server (it restarted, or the room moved to
   * another one): every connection is gone. Publish again; the others' `participant_published`
   * bring their pictures back.
   */
  reset() {
    // Others' screens and videos come back with their `participant_published` (if still on).
    for (const key of [...this.screens.keys()]) {
      const [source, id] = key.split(':');
      this.dropScreen(Number(id), source);
    }
    this.healing = new Set(this.links.keys());
    for (const [target, link] of [...this.links]) {
      link.close();
      this.links.delete(target);
      if (!link.local) link.tile.clear(reconnectingMedia());
    }
    if (this.localStream && this.you !== null) {
      this.localTile?.setState('connecting', reconnectingMedia());
      this.#link('publish', this.localTile).start();
    }
    if (this.screenStream && this.screenTile && this.you !== null) {
      this.#link('share', this.screenTile).start();
    }
    if (!this.healing.size) {
      this.healing = null; // nothing was connected: nothing to wait for
      this.healed();
    }
  }

  /** A connection came up: after a reset, say so once all of those it broke are back. */
  connected() {
    if (!this.healing) return;
    for (const target of this.healing) {
      // Left meanwhile, or (your screen) stopped sharing.
      const gone =
        target === 'share' ? !this.screenStream : target !== 'publish' && !this.tiles.has(target);
      const up = this.links.get(target)?.pc?.connectionState === 'connected';
      if (!gone && !up) return;
    }
    this.healing = null;
    this.healed();
  }

  /** Start again, at once, every connection that does not carry media (the network is back). */
  kick() {
    for (const link of this.links.values()) {
      if (link.closed || link.healthy) continue;
      link.failures = 0;
      link.start();
    }
  }

  /** Someone left: their tile goes. */
  left(id) {
    this.dropScreen(id);
    this.dropScreen(id, 'playback');
    this.dropLink(id);
    const tile = this.tiles.get(id);
    if (tile) this.visibility?.unobserve(tile.root);
    tile?.remove();
    this.tiles.delete(id);
  }

  setMuted(kind, muted) {
    for (const track of this.localStream?.getTracks() ?? []) {
      if (track.kind === kind) track.enabled = !muted;
    }
    // Your own tile shows what the others see: your initial while the camera is off.
    this.localTile?.setMedia(this.mediaState());
    this.sendMediaState();
  }

  /** Whether our microphone and camera are on. */
  mediaState() {
    const on = (kind) => Boolean(this.localStream?.getTracks().some((t) => t.kind === kind && t.enabled));
    return { audio: on('audio'), video: on('video') };
  }

  /** Tell the room whether our microphone and camera are on (once we publish). */
  sendMediaState() {
    const link = this.links.get('publish');
    if (!link?.remoteSet) return; // sent once publishing is answered
    this.socket.send({ type: 'media_state', ...this.mediaState() });
  }

  /**
   * Use another camera or microphone (`kind` 'video' or 'audio'): the new track replaces the old
   * one on the publishing connection's sender of that kind (RTCRtpSender.replaceTrack: the
   * same connection, no renegotiation), in the local stream and on your tile; a muted
   * microphone or stopped camera stays so. Resolves to the new track, or null while there is no
   * local media (the next preview asks for the chosen device).
   */
  async switchDevice(kind, deviceId) {
    this.preferred[kind] = deviceId;
    const stream = this.localStream;
    if (!stream) return null;
    const old = stream.getTracks().find((track) => track.kind === kind);
    const ask = () =>
      navigator.mediaDevices.getUserMedia({ [kind]: this.#constraints(kind, deviceId) });
    let fresh;
    try {
      fresh = await ask();
    } catch (error) {
      // Some cameras cannot be opened twice: free the old one and ask again.
      if (!old || (error?.name !== 'NotReadableError' && error?.name !== 'AbortError')) throw error;
      old.stop();
      fresh = await ask();
    }
    const [track] = fresh.getTracks();
    if (this.localStream !== stream) {
      track.stop(); // the call stopped meanwhile
      return null;
    }
    if (old) track.enabled = old.enabled;
    const link = this.links.get('publish');
    const sender = link?.pc
      ?.getTransceivers()
      .find((transceiver) => transceiver.receiver.track?.kind === kind)?.sender;
    if (sender) await sender.replaceTrack(track);
    if (old) {
      stream.removeTrack(old);
      old.stop();
    }
    stream.addTrack(track);
    // A kind we did not send before (no camera at first) needs a connection that carries it.
    if (link && !sender) link.start();
    if (this.localTile) {
      this.localTile.video.srcObject = null; // the element picks up the new track
      this.localTile.show(stream);
    }
    return track;
  }

  /** Play the others' sound through this speaker ('' for the default), where the browser can. */
  async setSpeaker(deviceId) {
    this.sinkId = deviceId;
    await Promise.all(Array.from(this.tiles.values(), (tile) => this.#applySink(tile)));
  }

  async #applySink(tile) {
    if (typeof tile.video.setSinkId !== 'function') return;
    try {
      await tile.video.setSinkId(this.sinkId);
    } catch (error) {
      console.warn('Could not change the speaker of a tile', error);
      throw error;
    }
  }

  hasTrack(kind) {
    return Boolean(this.localStream?.getTracks().some((t) => t.kind === kind));
  }

  /** Close every connection (the socket dropped or we left); the camera stays on for a rejoin. */
  stopLinks() {
    this.speaking.stop();
    this.quality.stop();
    for (const target of [...this.links.keys()]) this.dropLink(target);
    for (const tile of [...this.tiles.values(), ...this.screens.values()]) tile.remove();
    this.tiles.clear();
    this.screens.clear();
    this.localTile?.setState('preview', '');
    this.requests.failAll();
  }

  /** Leave for good: connections closed, camera and microphone released, tiles gone. */
  stop() {
    this.healing = null;
    this.stopShare();
    this.stopLinks();
    for (const track of this.localStream?.getTracks() ?? []) track.stop();
    this.localStream = null;
    this.mediaAsked = null; // a later preview asks again
    this.localTile?.remove();
    this.localTile = null;
    this.you = null;
  }
}
