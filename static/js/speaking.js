// Who is talking: the audio level of every remote participant and of your own microphone, read
// from the browser's own statistics (so it works the same on any media server), turned into a
// "speaking" state per person with hysteresis, and an active speaker that does not flicker.

const POLL_MS = 100;
// Chromium's audioLevel is linear, 1.0 at full scale: speech sits around 0.05-0.3, a quiet room
// below 0.01.
const SPEAKING_LEVEL = 0.03;
// Speaking starts after this much sound, and ends after this much quiet.
const ATTACK_MS = 150;
const RELEASE_MS = 800;
// The active speaker changes only to someone who has spoken this long, and is kept this long.
const ACTIVE_AFTER_MS = 1_000;
const ACTIVE_HOLD_MS = 2_000;

/** One person's speaking state, from a stream of audio levels. */
export class SpeakingState {
  constructor() {
    this.speaking = false;
    this.level = 0; // smoothed
    this.since = 0; // when the current run of sound (or of quiet) began
    this.loud = false;
    this.speakingSince = 0;
  }

  /** Feed one level; true when `speaking` changed. */
  update(level, now) {
    this.level = 0.6 * this.level + 0.4 * level;
    const loud = level >= SPEAKING_LEVEL;
    if (loud !== this.loud) {
      this.loud = loud;
      this.since = now;
    }
    const lasted = now - this.since;
    if (!this.speaking && loud && lasted >= ATTACK_MS) {
      this.speaking = true;
      this.speakingSince = now;
      return true;
    }
    if (this.speaking && !loud && lasted >= RELEASE_MS) {
      this.speaking = false;
      return true;
    }
    return false;
  }
}

/** The audio level a peer connection receives (or, `outbound`, sends from the microphone). */
async function levelOf(pc, outbound) {
  let level = 0;
  const stats = await pc.getStats();
  stats.forEach((report) => {
    if (report.kind !== 'audio' || typeof report.audioLevel !== 'number') return;
    if (outbound ? report.type === 'media-source' : report.type === 'inbound-rtp') {
      level = Math.max(level, report.audioLevel);
    }
  });
  return level;
}

/**
 * Polls the levels of the connections it is given and reports changes.
 * `onChange(id, speaking)` for each person whose speaking state changed; `onActive(id)` when
 * the active speaker changes (null: nobody has spoken yet, or they left).
 */
export class SpeakingMonitor {
  #states = new Map(); // id ('you' for yourself) -> SpeakingState
  #timer = 0;
  #active = null;
  #activeSince = 0;

  /**
   * @param {() => Iterable<[string | number, RTCPeerConnection, boolean]>} sources the
   *   connections to read: [person id, peer connection, whether it is your own (outbound)]
   */
  constructor(sources, { onChange = () => {}, onActive = () => {} } = {}) {
    this.sources = sources;
    this.onChange = onChange;
    this.onActive = onActive;
  }

  start() {
    if (!this.#timer) this.#timer = setInterval(() => this.#poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = 0;
    for (const [id, state] of this.#states) if (state.speaking) this.onChange(id, false);
    this.#states.clear();
    this.#setActive(null, 0);
  }

  get active() {
    return this.#active;
  }

  isSpeaking(id) {
    return Boolean(this.#states.get(id)?.speaking);
  }

  async #poll() {
    const now = performance.now();
    const seen = new Set();
    const reads = [];
    for (const [id, pc, outbound] of this.sources()) {
      if (!pc || pc.connectionState !== 'connected') continue;
      seen.add(id);
      reads.push(levelOf(pc, outbound).then((level) => [id, level], () => [id, 0]));
    }
    for (const [id, level] of await Promise.all(reads)) {
      let state = this.#states.get(id);
      if (!state) {
        state = new SpeakingState();
        this.#states.set(id, state);
      }
      if (state.update(level, now)) this.onChange(id, state.speaking);
    }
    for (const [id, state] of [...this.#states]) {
      if (seen.has(id)) continue;
      this.#states.delete(id); // they left, or their connection is down
      if (state.speaking) this.onChange(id, false);
    }
    this.#chooseActive(now);
  }

  /** The loudest remote person speaking long enough, once the current one had their turn. */
  #chooseActive(now) {
    if (this.#active !== null && !this.#states.has(this.#active)) this.#setActive(null, now);
    if (this.#active !== null && now - this.#activeSince < ACTIVE_HOLD_MS) return;
    let best = null;
    for (const [id, state] of this.#states) {
      if (id === 'you' || !state.speaking || now - state.speakingSince < ACTIVE_AFTER_MS) continue;
      if (!best || state.level > best[1].level) best = [id, state];
    }
    if (best && best[0] !== this.#active && !this.isSpeaking(this.#active)) {
      this.#setActive(best[0], now);
    }
  }

  #setActive(id, now) {
    if (id === this.#active) return;
    this.#active = id;
    this.#activeSince = now;
    this.onActive(id);
  }
}
