// RoomSocket: one room's WebSocket, with keep-alive pings and reconnection as docs/protocol.md asks.

const PING_EVERY_MS = 25_000;
// No frame at all (not even a pong) for this long: the connection is dead without having closed.
const SILENCE_LIMIT_MS = 2 * PING_EVERY_MS + 10_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
const MAX_ATTEMPTS = 8;
const LEAVE_WAIT_MS = 1_000;


/**
 * Events (CustomEvent, data in `detail`):
 * - one per server message, named by its `type` (`snapshot`, `participant_joined`, `refused`, …);
 *   detail is the message;
 * - `connecting` {attempt}: a socket is being opened (attempt 0 is the first, not a retry);
 * - `open`: the socket opened (the snapshot or a refusal follows);
 * - `close` {code, reason, final}: the socket closed; `final` means no reconnect will follow;
 * - `reconnecting` {attempt, delay}: the next attempt starts in `delay` ms;
 * - `gaveup` {attempts}: reconnecting failed too often; call retry() to start again.
 */
export class RoomSocket extends EventTarget {
  #url;
  #finalCodes; // after these the server said why (`refused`, `room_closed`) or we left
  #resume = null; // our last participant id: a reconnect takes over from it (no ghost, no seat)
  #ws = null;
  #attempt = 0;
  #stopped = true;
  #told = false; // the server sent `refused` or `room_closed` on this connection
  #pingTimer = 0;
  #retryTimer = 0;
  #lastHeard = 0;

  /**
   * @param {string} wsPath
   * @param {{final: number[]}} closeCodes the server's close codes (signaling/protocol)
   */
  constructor(wsPath, closeCodes) {
    super();
    this.#finalCodes = new Set(closeCodes.final);
    this.#url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + wsPath;
    window.addEventListener('online', () => this.#reconnectNow());
  }

  /** Connect (again), forgetting earlier failures. */
  retry() {
    if (this.#ws && !this.#stopped && !this.#told) return; // already connected or connecting
    this.#drop();
    this.#attempt = 0;
    this.#stopped = false;
    this.#open();
  }

  /** Remember this connection's participant id; the next connection replaces it. */
  resumeAs(participantId) {
    this.#resume = participantId;
  }

  /** Send one message; false when the socket is not open. */
  send(message) {
    if (this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  /** Say goodbye and stop reconnecting; resolves once the socket closed (or after a short wait). */
  leave() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    if (!ws || ws.readyState >= WebSocket.CLOSING) return Promise.resolve();
    if (!this.send({ type: 'leave' })) ws.close();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.close();
        resolve();
      }, LEAVE_WAIT_MS);
      ws.addEventListener('close', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }

  #open() {
    clearTimeout(this.#retryTimer);
    this.#told = false;
    const url = new URL(this.#url);
    if (this.#resume !== null) url.searchParams.set('resume', String(this.#resume));
    const ws = new WebSocket(url);
    this.#ws = ws;
    this.#emit('connecting', { attempt: this.#attempt });
    ws.addEventListener('open', () => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      this.#pingTimer = setInterval(() => this.#keepAlive(ws), PING_EVERY_MS);
      this.#emit('open');
    });
    ws.addEventListener('message', (event) => {
      if (ws === this.#ws) this.#receive(event.data);
    });
    ws.addEventListener('close', (event) => this.#closed(ws, event.code, event.reason));
  }

  #receive(data) {
    this.#lastHeard = Date.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn('Room socket: a frame that is not JSON', data);
      return;
    }
    if (typeof message?.type !== 'string') {
      console.warn('Room socket: a message without a type', message);
      return;
    }
    if (message.type === 'snapshot') this.#attempt = 0; // joined: the connection works
    if (message.type === 'refused' || message.type === 'room_closed') this.#told = true;
    this.#emit(message.type, message);
  }

  #keepAlive(ws) {
    if (Date.now() - this.#lastHeard > SILENCE_LIMIT_MS) {
      ws.close();
      this.#closed(ws, 1006, 'No reply from the server');
    } else {
      this.send({ type: 'ping' });
    }
  }

  #closed(ws, code, reason) {
    if (ws !== this.#ws) return; // an older socket we already gave up on
    this.#ws = null;
    clearInterval(this.#pingTimer);
    const final = this.#stopped || this.#told || this.#finalCodes.has(code);
    this.#emit('close', { code, reason, final });
    if (final) {
      this.#stopped = true;
      return;
    }
    this.#attempt += 1;
    if (this.#attempt > MAX_ATTEMPTS) {
      this.#stopped = true;
      this.#emit('gaveup', { attempts: MAX_ATTEMPTS });
      return;
    }
    const delay = backoff(this.#attempt);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
    this.#emit('reconnecting', { attempt: this.#attempt, delay });
  }

  /** Forget the current socket (its later events are ignored) and close it. */
  #drop() {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#retryTimer);
    if (ws && ws.readyState < WebSocket.CLOSING) ws.close();
  }

  #reconnectNow() {
    if (this.#stopped || this.#ws) return;
    clearTimeout(this.#retryTimer);
    this.#open();
  }

  #emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** 1 s, 2 s, 4 s … up to 30 s, each spread by ±20 % so a room's clients don't retry in step. */
function backoff(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1));
  return Math.round(Math.min(BACKOFF_MAX_MS, base * (0.8 + Math.random() * 0.4)));
}
