// Playing a video into the room (docs/protocol.md, "Playing a video"): the room's owner picks
// one of its uploaded videos or ready recordings in the room's details and plays it for
// everyone; it shows as a tile like a shared screen (call.js) until it ends or is stopped.

import { gettext, interpolate } from './i18n.js';
import { Requests } from './requests.js';

export class Playback {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLSelectElement | null} options.select what to play (the owner's, when the room
   *   has anything to play; absent for others)
   * @param {HTMLButtonElement | null} options.playButton
   * @param {HTMLButtonElement | null} options.stopButton
   * @param {(id: number) => string} options.nameOf
   * @param {(text: string) => void} options.notice
   * @param {(text: string) => void} options.announce
   */
  constructor({ socket, select, playButton, stopButton, nameOf, notice, announce }) {
    this.requests = new Requests(socket, 'play', ['playing', 'unpublished']);
    this.select = select;
    this.playButton = playButton;
    this.stopButton = stopButton;
    this.nameOf = nameOf;
    this.notice = notice;
    this.announce = announce;
    this.you = null;
    this.mine = null; // the title of the video you play, while it plays
    this.busy = false;
    playButton?.addEventListener('click', () => this.play());
    stopButton?.addEventListener('click', () => this.stop());
  }

  /** A (re)joined room: who plays what now. */
  setSnapshot({ participants = [] }, you) {
    this.you = you;
    this.mine = participants.find((p) => p.id === you)?.playing ?? null;
    this.#show();
  }

  started(id, title) {
    if (id === this.you) {
      this.mine = title;
      this.#show();
      return;
    }
    const text = interpolate(gettext('%(name)s is playing a video: %(title)s'), { name: this.nameOf(id), title });
    this.notice(text);
    this.announce(text);
  }

  stopped(id) {
    if (id !== this.you) return;
    this.mine = null;
    this.#show();
    this.announce(gettext('The video stopped.'));
  }

  /** The room's media was rebuilt: what played is gone (play it again). */
  reset() {
    this.mine = null;
    this.#show();
  }

  async play() {
    if (this.busy || !this.select?.value) return;
    await this.#request({ type: 'play', file: this.select.value });
  }

  async stop() {
    if (this.busy) return;
    await this.#request({ type: 'unpublish', source: 'playback' });
  }

  async #request(message) {
    this.busy = true;
    this.#show();
    try {
      await this.requests.send(message);
    } catch (error) {
      if (error?.message) this.notice(error.message);
    } finally {
      this.busy = false;
      this.#show();
    }
  }

  #show() {
    // The owner with nothing to play yet has the tools without the picker and its buttons.
    if (this.playButton) this.playButton.disabled = this.busy;
    if (!this.stopButton) return;
    this.stopButton.disabled = this.busy;
    this.stopButton.hidden = !this.mine;
    this.stopButton.textContent = this.mine
      ? interpolate(gettext('Stop “%(title)s”'), { title: this.mine })
      : gettext('Stop the video');
  }
}
