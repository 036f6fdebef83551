// Running a meeting from the page (docs/protocol.md, "Running a meeting: moderators"): who
// moderates, whom a moderator muted or stopped (the media server enforces it; the page only
// shows it), and the moderators' actions, in a menu beside each person in the people list.

import { gettext, interpolate } from './i18n.js';
import { Requests } from './requests.js';

const REPLIES = ['moderator_set', 'media_moderated', 'removed', 'readmitted', 'meeting_ended'];

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
   */
  constructor({ socket, userId, isOwner, endButton, notice, announce, changed }) {
    this.requests = new Requests(socket, 'mod', REPLIES);
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
  setSnapshot({ moderators = [], participants = [] }, you) {
    this.you = you;
    this.moderators = new Set(moderators);
    this.blocked = new Map(
      participants.map((p) => [p.id, { audio: Boolean(p.audio_blocked), video: Boolean(p.video_blocked) }]),
    );
    this.#showEnd();
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

  left(id) {
    this.blocked.delete(id);
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
  }
}
