// Requests over the room socket that wait for their reply: the server echoes a request's `id`
// in its reply, or in an `error` (docs/protocol.md). Used by call.js, chat.js, hands.js,
// moderation.js and reactions.js.

import { gettext } from './i18n.js';

const REQUEST_TIMEOUT_MS = 10_000;

export class Requests {
  #socket;
  #prefix;
  #serial = 0;
  #pending = new Map(); // request id -> {resolve, reject, timer}
  #timeoutMs;

  /**
   * @param {import('./room-socket.js').RoomSocket} socket
   * @param {string} prefix this module's request ids start with it (they never meet another's)
   * @param {string[]} replies the message types that answer this module's requests
   * @param {number} timeoutMs how long a request may wait for its reply
   */
  constructor(socket, prefix, replies, timeoutMs = REQUEST_TIMEOUT_MS) {
    this.#socket = socket;
    this.#prefix = prefix;
    this.#timeoutMs = timeoutMs;
    for (const type of [...replies, 'error']) {
      socket.addEventListener(type, (event) => this.#settle(event.detail ?? {}));
    }
    // A closed socket answers nothing: whatever waits fails now, not after the timeout.
    socket.addEventListener('close', () => this.failAll());
  }

  /** Fail whatever still waits for its reply (the connection is gone). */
  failAll() {
    for (const id of [...this.#pending.keys()]) {
      this.#settle({ type: 'error', id, code: 'offline', message: gettext('Not connected to the room.') });
    }
  }

  /** Send a request; resolves to its reply, rejects with {code, message} (an `error` reply). */
  send(message) {
    const id = `${this.#prefix}${++this.#serial}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject({ code: 'timeout', message: gettext('The server did not answer. Please try again.') });
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      if (!this.#socket.send({ ...message, id })) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject({ code: 'offline', message: gettext('Not connected to the room.') });
      }
    });
  }

  #settle(message) {
    const waiting = this.#pending.get(message.id);
    if (!waiting) return;
    this.#pending.delete(message.id);
    clearTimeout(waiting.timer);
    if (message.type === 'error') waiting.reject(message);
    else waiting.resolve(message);
  }
}
