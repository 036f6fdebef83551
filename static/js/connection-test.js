// ConnectionTest: "Test camera and connection" on the pre-join screen. It sends the camera and
// microphone the page already has through the media server and straight back, on a socket of its
// own (docs/protocol.md, "Connection test"), shows the picture that comes back, and reports the
// round-trip time and whether a relay (TURN) was needed. Then it stops and the server releases
// everything: when the picture has come back for a few seconds, when the person clicks Stop or
// Join, or after TEST_MS at most.

import { gettext, interpolate } from './i18n.js';

// Every string the person sees, in one place, from Django's JavaScript catalog (i18n.js).
const TEXT = {
  start: () => gettext('Test camera and connection'),
  stop: () => gettext('Stop test'),
  video: () => gettext('Your picture, back from the media server'),
  starting: () => gettext('Testing: sending your camera to the media server and back…'),
  noMedia: () =>
    gettext(
      'There is no camera or microphone to test. Allow them for this site, then reload the page.',
    ),
  picture: () => gettext('Picture back: %(value)s'),
  roundTrip: () => gettext('Round trip: %(value)s'),
  route: () => gettext('Connection: %(value)s'),
  yes: () => gettext('yes'),
  no: () => gettext('no'),
  unknown: () => '–', // no words: a dash
  milliseconds: () => gettext('%(ms)s ms'),
  underOneMillisecond: () => gettext('under 1 ms'),
  direct: () => gettext('direct'),
  relay: () => gettext('through a relay (TURN)'),
  passed: () =>
    gettext(
      'Test passed: your picture came back through the media server. Round trip %(rtt)s; connection %(route)s.',
    ),
  stopped: () => gettext('Test stopped.'),
  noPicture: () =>
    gettext('Connected, but no picture came back. Check that your camera is on, then try again.'),
  noConnection: () =>
    gettext(
      'Could not connect to the media server. A firewall may be blocking video calls on this network.',
    ),
  lostSocket: () =>
    gettext('The test was interrupted: the connection to the server closed. Please try again.'),
};

/** A user-visible string, in the person's language, with its `%(name)s` placeholders filled in. */
function t(key, values = {}) {
  return interpolate(TEXT[key](), values);
}

const WS_PATH = '/ws/connection-test/';
const TEST_MS = 20_000; // the page gives up after this long
const SHOW_PICTURE_MS = 5_000; // the picture is shown this long before the test ends by itself
const STATS_EVERY_MS = 500;

const SUPPORTED = typeof RTCPeerConnection === 'function' && typeof WebSocket === 'function';

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round-trip time as the person reads it. */
function rttText(ms) {
  if (ms === null) return t('unknown');
  return ms < 1 ? t('underOneMillisecond') : t('milliseconds', { ms: Math.round(ms) });
}

/** What getStats says of the connection: video frames decoded, round trip (ms), route. */
async function measure(pc) {
  const reports = new Map();
  (await pc.getStats()).forEach((report) => reports.set(report.id, report));
  let frames = 0;
  let pair = null;
  for (const report of reports.values()) {
    if (report.type === 'inbound-rtp' && report.kind === 'video') frames += report.framesDecoded || 0;
    if (report.type === 'transport' && report.selectedCandidatePairId) {
      pair = reports.get(report.selectedCandidatePairId) ?? pair;
    }
  }
  if (!pair) {
    // Browsers without transport.selectedCandidatePairId mark the pair in use themselves.
    for (const report of reports.values()) {
      const inUse = report.selected || (report.nominated && report.state === 'succeeded');
      if (report.type === 'candidate-pair' && inUse) pair = report;
    }
  }
  let rttMs = null;
  let route = null;
  if (pair) {
    if (typeof pair.currentRoundTripTime === 'number') rttMs = pair.currentRoundTripTime * 1000;
    const local = reports.get(pair.localCandidateId);
    const remote = reports.get(pair.remoteCandidateId);
    if (local && remote) {
      route = local.candidateType === 'relay' || remote.candidateType === 'relay' ? 'relay' : 'direct';
    }
  }
  return { frames, rttMs, route };
}

export class ConnectionTest {
  #container;
  #button;
  #stream;
  #video;
  #status;
  #facts;
  #run = null; // the test in progress, or null

  /**
   * @param {object} options
   * @param {HTMLElement} options.container holds the button; the result goes in it too
   * @param {HTMLButtonElement} options.button starts and stops the test
   * @param {() => Promise<MediaStream | null>} options.stream the pre-join camera and microphone
   */
  constructor({ container, button, stream }) {
    this.#container = container;
    this.#button = button;
    this.#stream = stream;
    const result = el('div', 'connection-test__result');
    this.#video = el('video', 'connection-test__video');
    this.#video.autoplay = true;
    this.#video.muted = true; // never play our own microphone back: it would echo
    this.#video.playsInline = true;
    this.#video.hidden = true;
    this.#video.setAttribute('aria-label', t('video'));
    const text = el('div', 'connection-test__text');
    // The outcome is announced politely; the figures that change every moment are not.
    this.#status = el('p', 'connection-test__status');
    this.#status.setAttribute('role', 'status');
    this.#facts = el('ul', 'connection-test__facts');
    this.#facts.hidden = true;
    text.append(this.#status, this.#facts);
    result.append(this.#video, text);
    container.append(result);
    container.dataset.state = 'idle';
    button.textContent = t('start');
    button.addEventListener('click', () => (this.#run ? this.stop() : this.start()));
  }

  /** Offer the test (the pre-join screen) or not (joined, left): hiding it stops a test. */
  set available(on) {
    this.#container.hidden = !on || !SUPPORTED;
    if (!on) this.stop();
  }

  get running() {
    return this.#run !== null;
  }

  async start() {
    if (this.#run) return;
    const run = {
      ws: null,
      pc: null,
      stream: null,
      timers: [],
      offered: false, // loopback_start is sent: our candidates may follow
      local: [], // our candidates from before that
      remoteSet: false, // the answer is applied: the server's candidates may be added
      early: [], // the server's candidates from before that
      measured: { frames: 0, rttMs: null, route: null },
      pictureSince: 0, // when the first returned frame was decoded
    };
    this.#run = run;
    this.#container.dataset.state = 'running';
    this.#button.textContent = t('stop');
    this.#status.textContent = t('starting');
    this.#showFacts(run.measured);
    const stream = await this.#stream();
    if (this.#run !== run) return; // stopped meanwhile
    if (!stream || !stream.getTracks().length) {
      this.#end(run, 'failed', t('noMedia'));
      return;
    }
    run.stream = stream;
    run.timers.push(setTimeout(() => this.#end(run, 'timeout'), TEST_MS));
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const ws = new WebSocket(scheme + location.host + WS_PATH);
    run.ws = ws;
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#received(run, message).catch((error) => {
        console.warn('Connection test failed', error);
        this.#end(run, 'failed', t('noConnection'));
      });
    });
    ws.addEventListener('close', () => this.#end(run, 'failed', t('lostSocket')));
  }

  /** Stop a test in progress (the person joins, or leaves the pre-join screen). */
  stop() {
    if (this.#run) this.#end(this.#run, 'stopped');
  }

  async #received(run, message) {
    if (this.#run !== run) return;
    switch (message.type) {
      case 'loopback_ready':
        await this.#negotiate(run, message.ice);
        break;
      case 'loopback_started':
        await run.pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
        run.remoteSet = true;
        for (const candidate of run.early.splice(0)) await this.#addCandidate(run, candidate);
        break;
      case 'ice_candidate':
        if (message.target !== 'loopback') break;
        if (run.remoteSet) await this.#addCandidate(run, message.candidate);
        else run.early.push(message.candidate);
        break;
      case 'loopback_stopped':
        if (message.reason !== 'requested') this.#end(run, 'timeout');
        break;
      case 'error':
      case 'refused':
        this.#end(run, 'failed', message.message);
        break;
      default:
        break;
    }
  }

  async #negotiate(run, ice) {
    const pc = new RTCPeerConnection({
      iceServers: ice?.iceServers ?? [],
      iceTransportPolicy: ice?.iceTransportPolicy ?? 'all',
    });
    run.pc = pc;
    // Send-receive: the media server sends what it gets straight back on the same connection.
    for (const track of run.stream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendrecv', streams: [run.stream] });
    }
    const back = new MediaStream();
    pc.addEventListener('track', ({ track }) => {
      back.addTrack(track);
      if (track.kind !== 'video') return;
      this.#video.srcObject = back;
      this.#video.hidden = false;
      this.#video.play().catch(() => {});
    });
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (!candidate?.candidate || this.#run !== run) return;
      const message = { type: 'ice', target: 'loopback', candidate: candidate.toJSON() };
      if (run.offered) this.#send(run, message);
      else run.local.push(message); // the offer goes first: it makes the endpoint
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed') this.#end(run, 'failed', t('noConnection'));
    });
    await pc.setLocalDescription(await pc.createOffer());
    if (this.#run !== run) return;
    this.#send(run, { type: 'loopback_start', sdp: pc.localDescription.sdp, id: 'start' });
    run.offered = true;
    for (const message of run.local.splice(0)) this.#send(run, message);
    run.timers.push(setInterval(() => this.#update(run), STATS_EVERY_MS));
  }

  async #addCandidate(run, candidate) {
    try {
      await run.pc.addIceCandidate(candidate);
    } catch (error) {
      console.warn('A candidate from the media server was refused', error);
    }
  }

  #send(run, message) {
    if (run.ws?.readyState === WebSocket.OPEN) run.ws.send(JSON.stringify(message));
  }

  /** Read the statistics; once the picture has come back for a while, the test has passed. */
  async #update(run) {
    if (!run.pc || this.#run !== run) return;
    const now = await measure(run.pc);
    if (this.#run !== run) return;
    run.measured = {
      frames: now.frames,
      rttMs: now.rttMs ?? run.measured.rttMs,
      route: now.route ?? run.measured.route,
    };
    this.#showFacts(run.measured);
    if (now.frames > 0 && !run.pictureSince) run.pictureSince = performance.now();
    const shown = run.pictureSince && performance.now() - run.pictureSince >= SHOW_PICTURE_MS;
    if (shown && run.measured.rttMs !== null && run.measured.route) this.#end(run, 'passed');
  }

  #showFacts({ frames, rttMs, route }) {
    const facts = [
      ['picture', t('picture', { value: frames > 0 ? t('yes') : t('no') })],
      ['rtt', t('roundTrip', { value: rttText(rttMs) })],
      ['route', t('route', { value: route ? t(route) : t('unknown') })],
    ];
    this.#facts.replaceChildren(
      ...facts.map(([name, text]) => {
        const item = el('li', `connection-test__fact connection-test__fact--${name}`, text);
        item.dataset.fact = name;
        return item;
      }),
    );
    this.#facts.hidden = false;
    const data = this.#container.dataset;
    data.frames = String(frames);
    if (rttMs !== null) data.rttMs = String(Math.round(rttMs * 10) / 10);
    else delete data.rttMs;
    if (route) data.route = route;
    else delete data.route;
  }

  /**
   * End the test however it ends (`passed`, `stopped`, `timeout`, `failed` with a reason): the
   * connection closes, the server is told to stop and the socket closes (either releases the
   * media on the server), and the outcome is announced.
   */
  #end(run, outcome, reason = '') {
    if (this.#run !== run) return;
    this.#run = null;
    for (const timer of run.timers) clearTimeout(timer); // timeouts and intervals share ids
    const connected = run.pc?.connectionState === 'connected';
    run.pc?.close();
    if (run.ws) {
      this.#send(run, { type: 'loopback_stop' });
      run.ws.close(1000);
    }
    this.#video.srcObject = null;
    this.#video.hidden = true;
    this.#button.textContent = t('start');
    const { frames, rttMs, route } = run.measured;
    let state = outcome;
    let text = reason;
    if (outcome === 'timeout') state = frames > 0 ? 'passed' : 'failed'; // say what worked
    if (state === 'passed') {
      text = t('passed', { rtt: rttText(rttMs), route: route ? t(route) : t('unknown') });
    } else if (outcome === 'stopped') {
      text = t('stopped');
    } else if (outcome === 'timeout') {
      text = connected ? t('noPicture') : t('noConnection');
    }
    this.#container.dataset.state = state;
    this.#status.textContent = text;
  }
}
