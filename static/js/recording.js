// Recording the meeting (docs/protocol.md, "Recording"): everyone sees that the meeting is
// recorded (a badge in the top bar, and a notice on the pre-join screen); moderators start and
// stop it from the room's details. The owner finds the recordings on the room's recordings page.

import { gettext, interpolate } from './i18n.js';
import { Requests } from './requests.js';

export class Recording {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLElement} options.indicator the top bar's "Recording" badge
   * @param {HTMLElement} options.tools the moderators' recording controls (hidden for others)
   * @param {HTMLButtonElement} options.button "Start recording" / "Stop recording"
   * @param {() => boolean} options.isModerator
   * @param {(text: string) => void} options.notice
   * @param {(text: string) => void} options.announce
   */
  constructor({ socket, indicator, tools, button, isModerator, notice, announce }) {
    this.requests = new Requests(socket, 'rec', ['recording_set']);
    this.indicator = indicator;
    this.tools = tools;
    this.button = button;
    this.isModerator = isModerator;
    this.notice = notice;
    this.announce = announce;
    this.recording = null; // {id, started_at, started_by} while the meeting is recorded
    this.busy = false;
    button.addEventListener('click', () => this.toggle());
  }

  /** A (re)joined room: is the meeting being recorded? Said once to whoever joins. */
  setSnapshot({ recording = null }) {
    this.#show(recording);
    if (recording) this.announce(gettext('This meeting is being recorded.'));
  }

  /** The recording started or stopped. */
  changed({ recording }) {
    const was = this.recording;
    this.#show(recording);
    if (recording && !was) {
      const text = recording.started_by
        ? interpolate(gettext('%(name)s started recording the meeting.'), { name: recording.started_by })
        : gettext('The meeting is being recorded.');
      this.notice(text);
      this.announce(text);
    } else if (!recording && was) {
      this.notice(gettext('The recording stopped.'));
      this.announce(gettext('The recording stopped.'));
    }
  }

  /** Who moderates changed: the controls follow. */
  refresh() {
    this.#show(this.recording);
  }

  async toggle() {
    if (this.busy) return;
    const on = !this.recording;
    if (!on && !window.confirm(gettext('Stop recording? The recording is then prepared for the room’s owner to download.'))) {
      return;
    }
    this.busy = true;
    this.button.disabled = true;
    try {
      await this.requests.send({ type: 'record', on });
    } catch (error) {
      if (error?.message) this.notice(error.message);
    } finally {
      this.busy = false;
      this.button.disabled = false;
    }
  }

  #show(recording) {
    this.recording = recording;
    this.indicator.hidden = !recording;
    if (recording) {
      const since = new Date(recording.started_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      this.indicator.title = recording.started_by
        ? interpolate(gettext('Recorded since %(time)s, started by %(name)s'), { time: since, name: recording.started_by })
        : interpolate(gettext('Recorded since %(time)s'), { time: since });
    }
    this.tools.hidden = !this.isModerator();
    this.button.textContent = recording ? gettext('Stop recording') : gettext('Start recording');
    this.button.classList.toggle('button--danger', Boolean(recording));
    this.button.classList.toggle('button--secondary', !recording);
  }
}
