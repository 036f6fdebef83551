// Running a meeting from the page (docs/protocol.md, "Running a meeting: moderators"): who
// moderates, whom a moderator muted or stopped (the media server enforces it; the page only
// shows it), the moderators' actions (in a menu beside each person in the people list and on
// each tile), "Mute everyone", and who waits to be let in (with a sound and a count).

import { gettext, interpolate } from './i18n.js';
import { Requests } from './requests.js';

const REPLIES = [
  'moderator_set',
  'media_moderated',
  'removed',
  'readmitted',
  'meeting_ended',
  'muted_all',
  'join_decided',
];

export class Moderation {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {number} options.userId this account
   * @param {boolean} options.isOwner whether this account owns the room (it names moderators)
   * @param {HTMLButtonElement} options.endButton "End meeting for everyone" (moderators only)
   * @param {(text: string) => void} options.notice
   * @param {(text: string) => void} options.announce
   * @param {() => void} options.changed the people list should be drawn again
   * @param {(kind: string, blocked: boolean) => void} options.ownBlocked a moderator blocked or
   *   allowed this tab's own microphone or camera
   * @param {object} options.waitingUi the people panel's waiting list, its buttons and the count
   * @param {HTMLButtonElement} options.muteAllButton "Mute everyone"
   */
  constructor({ socket, userId, isOwner, endButton, notice, announce, changed, ownBlocked, waitingUi, muteAllButton }) {
    this.requests = new Requests(socket, 'mod', REPLIES);
    this.ownBlocked = ownBlocked;
    this.waitingUi = waitingUi;
    this.muteAllButton = muteAllButton;
    this.waiting = []; // [{user_id, name, asked_at}], first come first
    waitingUi.admitAll.addEventListener('click', () => this.#send({ type: 'admit', user_id: null }));
    waitingUi.denyAll.addEventListener('click', () => this.#send({ type: 'deny', user_id: null }));
    muteAllButton.addEventListener('click', () => {
      if (window.confirm(gettext('Mute everyone who is not a moderator?'))) {
        this.#send({ type: 'mute_all', kind: 'audio' });
      }
    });
    this.userId = userId;
    this.isOwner = isOwner;
    this.endButton = endButton;
    this.notice = notice;
    this.announce = announce;
    this.changed = changed;
    this.moderators = new Set(); // user ids
    this.blocked = new Map(); // participant id -> {audio, video}: what a moderator stopped
    this.you = null;
    this.openFor = null; // whose action menu is open (the list is redrawn often)
    endButton.addEventListener('click', () => this.endMeeting());
  }

  get isModerator() {
    return this.isOwner || this.moderators.has(this.userId);
  }

  /** A (re)joined room: who moderates, who is blocked. */
  setSnapshot(message, you) {
    const { moderators = [], participants = [] } = message;
    this.you = you;
    this.moderators = new Set(moderators);
    this.blocked = new Map(
      participants.map((p) => [p.id, { audio: Boolean(p.audio_blocked), video: Boolean(p.video_blocked) }]),
    );
    this.#showEnd();
    this.#showWaiting(message.waiting ?? [], { quiet: true });
  }

  /** Joined blocked ("everyone joins muted", or a reconnect): this tab's own devices follow. */
  applyOwnBlocks() {
    for (const kind of ['audio', 'video']) {
      if (this.you !== null && this.isBlocked(this.you, kind)) this.ownBlocked(kind, true);
    }
  }

  /** Whether a moderator blocked this participant's `kind` ("audio" or "video"). */
  isBlocked(id, kind) {
    return Boolean(this.blocked.get(id)?.[kind]);
  }

  /** Turn your own microphone or camera back on after a moderator blocked it (when the room lets you). */
  async unblockSelf(kind) {
    try {
      await this.requests.send({ type: 'unblock_self', kind });
      return true;
    } catch (error) {
      if (error?.message) this.notice(error.message);
      return false;
    }
  }

  /** Who waits to be let in changed (moderators only). */
  waitingChanged({ waiting }) {
    this.#showWaiting(waiting, { quiet: false });
  }

  #showWaiting(waiting, { quiet }) {
    const before = new Set(this.waiting.map((w) => w.user_id));
    this.waiting = waiting;
    const arrived = waiting.filter((w) => !before.has(w.user_id));
    const { section, list, heading, count } = this.waitingUi;
    section.hidden = !waiting.length;
    count.hidden = !waiting.length;
    count.textContent = String(waiting.length);
    heading.textContent = interpolate(gettext('Waiting to join (%(count)s)'), { count: waiting.length });
    list.replaceChildren(...waiting.map((w) => this.#waitingItem(w)));
    this.waitingUi.allButtons.hidden = waiting.length < 2;
    if (!quiet && arrived.length) {
      const text =
        arrived.length === 1
          ? interpolate(gettext('%(name)s asks to join'), { name: arrived[0].name || gettext('Someone') })
          : interpolate(gettext('%(count)s people ask to join'), { count: arrived.length });
      this.notice(text);
      this.announce(text);
      chime();
    }
  }

  #waitingItem({ user_id: userId, name }) {
    const item = document.createElement('li');
    item.className = 'participant waiting__item';
    item.dataset.userId = String(userId);
    const label = document.createElement('span');
    label.className = 'participant__name';
    label.textContent = name || gettext('Someone');
    const button = (text, ariaLabel, className, message) => {
      const node = document.createElement('button');
      node.type = 'button';
      node.className = `button ${className} button--small`;
      node.textContent = text;
      node.setAttribute('aria-label', ariaLabel);
      node.addEventListener('click', () => this.#send(message));
      return node;
    };
    const who = { name: name || gettext('Someone') };
    item.append(
      label,
      button(gettext('Let in'), interpolate(gettext('Let %(name)s in'), who), 'button--primary', {
        type: 'admit',
        user_id: userId,
      }),
      button(gettext('Turn away'), interpolate(gettext('Turn %(name)s away'), who), 'button--secondary', {
        type: 'deny',
        user_id: userId,
      }),
    );
    return item;
  }

  moderatorsChanged({ user_ids: ids }) {
    const was = this.isModerator;
    this.moderators = new Set(ids);
    if (was !== this.isModerator && !this.isOwner) {
      this.announce(
        this.isModerator
          ? gettext('You are now a moderator of this meeting.')
          : gettext('You are no longer a moderator of this meeting.'),
      );
    }
    this.#showEnd();
    this.changed();
  }

  /** A moderator stopped (or allowed again) someone's microphone or camera. */
  mediaBlocked({ participant_id: id, kind, blocked }) {
    const state = this.blocked.get(id) ?? { audio: false, video: false };
    this.blocked.set(id, { ...state, [kind]: blocked });
    if (id === this.you) {
      this.ownBlocked(kind, blocked);
      const text = {
        audio: blocked
          ? gettext('A moderator muted your microphone. Raise your hand to ask to speak.')
          : gettext('A moderator allowed your microphone again.'),
        video: blocked
          ? gettext('A moderator stopped your camera.')
          : gettext('A moderator allowed your camera again.'),
      }[kind];
      this.notice(text);
      this.announce(text);
    }
    this.changed();
  }

  /** Someone joined, maybe blocked already ("everyone joins muted", a new tab of a muted person). */
  joined({ id, audio_blocked: audio = false, video_blocked: video = false }) {
    this.blocked.set(id, { audio: Boolean(audio), video: Boolean(video) });
  }

  left(id) {
    this.blocked.delete(id);
  }

  /** A moderator's menu on another person's tile (none for others, yourself and the owner). */
  tileMenu(participant) {
    if (!this.isModerator || participant.id === this.you || participant.is_owner) return null;
    const menu = this.#menu(participant, this.blocked.get(participant.id) ?? {});
    menu.classList.add('tile__actions');
    return menu;
  }

  /** Marks and, for moderators, the actions beside a person in the people list. */
  decorate(item, participant) {
    const badge = (className, label) => {
      const mark = document.createElement('span');
      mark.className = `badge ${className}`;
      mark.textContent = label;
      item.append(mark);
    };
    if (this.moderators.has(participant.user_id) && !participant.is_owner) {
      badge('badge--moderator', gettext('moderator'));
    }
    const blocked = this.blocked.get(participant.id) ?? {};
    if (blocked.audio) badge('badge--blocked', gettext('muted by a moderator'));
    if (blocked.video) badge('badge--blocked', gettext('camera stopped by a moderator'));
    if (!this.isModerator || participant.id === this.you || participant.is_owner) return;
    item.append(this.#menu(participant, blocked));
  }

  #menu(participant, blocked) {
    const name = participant.name || gettext('Someone');
    const menu = document.createElement('details');
    menu.className = 'participant__actions';
    menu.open = this.openFor === participant.id;
    menu.addEventListener('toggle', () => {
      if (menu.open) this.openFor = participant.id;
      else if (this.openFor === participant.id) this.openFor = null;
    });
    const summary = document.createElement('summary');
    summary.textContent = '⋯';
    const label = interpolate(gettext('Actions for %(name)s'), { name });
    summary.setAttribute('aria-label', label);
    summary.title = label;
    const list = document.createElement('div');
    list.className = 'participant__action-list';
    list.setAttribute('role', 'group');
    const action = (label, message, confirmText) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'button button--secondary button--small';
      button.textContent = label;
      button.addEventListener('click', () => {
        if (confirmText && !window.confirm(confirmText)) return;
        this.openFor = null;
        menu.open = false; // done with it: the next redraw shows the new state
        this.#send(message);
      });
      list.append(button);
    };
    const id = participant.id;
    action(
      blocked.audio ? gettext('Allow microphone') : gettext('Mute microphone'),
      { type: 'moderate_media', participant_id: id, kind: 'audio', blocked: !blocked.audio },
    );
    action(
      blocked.video ? gettext('Allow camera') : gettext('Stop camera'),
      { type: 'moderate_media', participant_id: id, kind: 'video', blocked: !blocked.video },
    );
    if (this.isOwner && participant.user_id !== this.userId) {
      const on = !this.moderators.has(participant.user_id);
      action(on ? gettext('Make moderator') : gettext('Remove as moderator'), {
        type: 'moderator',
        user_id: participant.user_id,
        on,
      });
    }
    action(
      gettext('Remove from the meeting'),
      { type: 'remove', participant_id: id },
      interpolate(gettext('Remove %(name)s from this meeting? They cannot come back until the room is empty.'), { name }),
    );
    action(
      gettext('Remove and ban from the room'),
      { type: 'remove', participant_id: id, ban: true },
      interpolate(gettext('Remove %(name)s and ban them from this room? They cannot come back until a moderator lets them.'), { name }),
    );
    menu.append(summary, list);
    return menu;
  }

  async #send(message) {
    try {
      await this.requests.send(message);
    } catch (error) {
      if (error?.message) this.notice(error.message);
    }
  }

  async endMeeting() {
    if (!window.confirm(gettext('End the meeting for everyone? Everyone leaves the call; the room stays for next time.'))) {
      return;
    }
    await this.#send({ type: 'end_meeting' });
  }

  #showEnd() {
    this.endButton.hidden = !this.isModerator;
    this.muteAllButton.parentElement.hidden = !this.isModerator;
    if (!this.isModerator) this.#showWaiting([], { quiet: true });
  }
}

/** A short, soft two-note sound: someone asks to join (the page must have been interacted with). */
function chime() {
  try {
    const context = new AudioContext();
    const now = context.currentTime;
    for (const [offset, frequency] of [[0, 660], [0.16, 880]]) {
      const tone = context.createOscillator();
      const gain = context.createGain();
      tone.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, now + offset);
      gain.gain.exponentialRampToValueAtTime(0.15, now + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + offset + 0.3);
      tone.connect(gain).connect(context.destination);
      tone.start(now + offset);
      tone.stop(now + offset + 0.32);
    }
    setTimeout(() => context.close().catch(() => {}), 800);
  } catch {
    // no sound here: the notice and the count say it
  }
}
