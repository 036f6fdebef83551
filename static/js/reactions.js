// Reactions: a few emoji that float up over the sender's tile, for everyone (you included).
// The server allows only its own few (the buttons of #reactions-menu) and limits how often.

import { gettext } from './i18n.js';

const FLOAT_MS = 3_000; // as long as the animation in app.css (.reaction-float)
const PAUSE_AFTER_LIMIT_MS = 2_000;
const MAX_FLOATING_PER_TILE = 6; // a burst of reactions does not bury the picture

export class Reactions {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLButtonElement} options.button opens the menu (#reactions-button)
   * @param {HTMLElement} options.menu the emoji buttons (#reactions-menu)
   * @param {HTMLElement} options.stage the tiles
   * @param {(text: string) => void} options.notice shows a message above the stage
   */
  constructor({ socket, button, menu, stage, notice }) {
    this.socket = socket;
    this.button = button;
    this.menu = menu;
    this.stage = stage;
    this.notice = notice;
    this.you = null;
    this.serial = 0;
    this.pauseTimer = 0;

    button.addEventListener('click', () => this.setOpen(this.menu.hidden));
    menu.addEventListener('click', (event) => {
      const choice = event.target.closest('[data-emoji]');
      if (choice && !choice.disabled) this.send(choice.dataset.emoji);
    });
    // Escape closes the menu, back on its button (before the page's Escape closes a panel).
    for (const target of [button, menu]) {
      target.addEventListener('keydown', (event) => {
        if (event.key !== 'Escape' || this.menu.hidden) return;
        event.stopPropagation();
        this.setOpen(false);
        this.button.focus();
      });
    }
    document.addEventListener('pointerdown', (event) => {
      if (!this.menu.hidden && !this.menu.contains(event.target) && !this.button.contains(event.target)) {
        this.setOpen(false);
      }
    });
    socket.addEventListener('error', (event) => this.#refused(event.detail ?? {}));
  }

  setYou(you) {
    this.you = you;
  }

  setOpen(open) {
    this.menu.hidden = !open;
    this.button.setAttribute('aria-expanded', String(open));
    if (open) this.menu.querySelector('button:not([disabled])')?.focus();
  }

  send(emoji) {
    const id = `reaction${++this.serial}`;
    if (!this.socket.send({ type: 'reaction', emoji, id })) {
      this.notice(gettext('Not connected to the room.'));
    }
  }

  /** The server refused a reaction (too many): say so, and pause the buttons a moment. */
  #refused({ id, message, code }) {
    if (typeof id !== 'string' || !id.startsWith('reaction')) return;
    this.notice(message || gettext('Your reaction was not sent.'));
    if (code !== 'rate_limited') return;
    const buttons = this.menu.querySelectorAll('button');
    for (const button of buttons) button.disabled = true;
    clearTimeout(this.pauseTimer);
    this.pauseTimer = setTimeout(() => {
      for (const button of buttons) button.disabled = false;
    }, PAUSE_AFTER_LIMIT_MS);
  }

  /** Someone reacted: the emoji floats up over their tile (and is gone after). */
  show({ participant_id: id, emoji }) {
    const selector =
      id === this.you ? '.tile--local:not(.tile--screen)' : `.tile[data-participant-id="${id}"]:not(.tile--screen)`;
    const tile = this.stage.querySelector(selector);
    if (!tile) return;
    const floating = tile.querySelectorAll(':scope > .reaction-float');
    if (floating.length >= MAX_FLOATING_PER_TILE) floating[0].remove();
    const mark = document.createElement('span');
    mark.className = 'reaction-float';
    mark.textContent = emoji;
    mark.setAttribute('aria-hidden', 'true');
    // A little to the side each time, so a few in a row do not hide each other.
    mark.style.setProperty('--reaction-x', `${10 + Math.random() * 60}%`);
    tile.append(mark);
    const remove = () => mark.remove();
    mark.addEventListener('animationend', remove, { once: true });
    setTimeout(remove, FLOAT_MS + 500); // no animation (hidden tile, reduced motion): still goes
  }
}
