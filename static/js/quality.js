// Connection quality per tile: packet loss, jitter, round-trip time and bitrate of each peer
// connection, from the browser's own statistics every few seconds, summed up as good, fair or
// poor (the numbers on hover and focus).

import { gettext, interpolate } from './i18n.js';

const POLL_MS = 2_000;
const TEXT = {
  good: () => gettext('Connection: good'),
  fair: () => gettext('Connection: fair'),
  poor: () => gettext('Connection: poor'),
  figures: (q) =>
    interpolate(gettext('%(kbps)s kbps, %(loss)s lost, %(rtt)s ms round trip, %(jitter)s ms jitter'), {
      kbps: Math.round(q.kbps),
      loss: `${q.loss.toFixed(1)} %`,
      rtt: Math.round(q.rtt),
      jitter: Math.round(q.jitter),
    }),
};

/** good, fair or poor, from loss (%), round trip (ms) and jitter (ms). */
export function level({ loss, rtt, jitter }) {
  if (loss > 5 || rtt > 400 || jitter > 60) return 'poor';
  if (loss > 1 || rtt > 200 || jitter > 30) return 'fair';
  return 'good';
}

/** The figures of one peer connection since its previous reading (`previous`, updated). */
async function read(pc, previous) {
  let bytes = 0;
  let packets = 0;
  let lost = 0;
  let jitter = 0;
  let rtt = 0;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      bytes += r.bytesReceived || 0;
      packets += r.packetsReceived || 0;
      lost += Math.max(0, r.packetsLost || 0);
      jitter = Math.max(jitter, (r.jitter || 0) * 1000);
    } else if (r.type === 'outbound-rtp') {
      bytes += r.bytesSent || 0;
    } else if (r.type === 'remote-inbound-rtp') {
      // What the media server says of what we send: its loss and our round trip to it.
      packets += r.packetsReceived ?? 0;
      lost += Math.max(0, r.packetsLost || 0);
      jitter = Math.max(jitter, (r.jitter || 0) * 1000);
      if (r.roundTripTime) rtt = Math.max(rtt, r.roundTripTime * 1000);
    } else if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime) {
      rtt = Math.max(rtt, r.currentRoundTripTime * 1000);
    }
  });
  const now = performance.now();
  const last = previous.get(pc);
  previous.set(pc, { now, bytes, packets, lost });
  if (!last) return null;
  const seconds = (now - last.now) / 1000;
  const newPackets = packets - last.packets + (lost - last.lost);
  return {
    kbps: (8 * (bytes - last.bytes)) / 1000 / seconds,
    loss: newPackets > 0 ? (100 * (lost - last.lost)) / newPackets : 0,
    rtt,
    jitter,
  };
}

/** Polls the connections it is given and shows each one's quality on its tile. */
export class QualityMonitor {
  #timer = 0;
  #previous = new WeakMap();

  /** @param {() => Iterable<[RTCPeerConnection, {setQuality: Function}]>} sources */
  constructor(sources) {
    this.sources = sources;
  }

  start() {
    if (!this.#timer) this.#timer = setInterval(() => this.#poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = 0;
  }

  async #poll() {
    for (const [pc, tile] of this.sources()) {
      if (!pc || pc.connectionState !== 'connected') continue;
      try {
        const quality = await read(pc, this.#previous);
        if (!quality) continue; // the first reading only sets the baseline
        const grade = level(quality);
        tile.setQuality(grade, `${TEXT[grade]()}. ${TEXT.figures(quality)}`);
      } catch {
        // a connection closed while being read: the next poll skips it
      }
    }
  }
}
