// Raised hands: your own toggle (the button, or H), a ✋ on the tile of everyone whose hand is
// up, and the order hands went up for the people list. The room's owner can lower anyone's.
import { gettext, interpolate, language, pgettext } from './i18n.js';
import { Requests } from './requests.js';

// Talking this long with your hand up lowers it: you have the floor.
const LOWER_AFTER_SPEAKING_MS = 4_000;
// 1st, 2nd…: the ordinal rules of the page's language (English's are the msgids' own).
const ORDINALS = new Intl.PluralRules(language() || 'en', { type: 'ordinal' });
const ORDINAL_FORMS = {
  zero: () => pgettext('ordinal, zero', '%(n)sth'),
  one: () => pgettext('ordinal, one', '%(n)sst'),
  two: () => pgettext('ordinal, two', '%(n)snd'),
  few: () => pgettext('ordinal, few', '%(n)srd'),
  many: () => pgettext('ordinal, many', '%(n)sth'),
  other: () => pgettext('ordinal, other', '%(n)sth'),
};

const ordinal = (n) => interpolate((ORDINAL_FORMS[ORDINALS.select(n)] ?? ORDINAL_FORMS.other)(), { n });

export class Hands {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLButtonElement} options.button your own toggle (#hand-button)
   * @param {HTMLElement} options.stage the tiles (`.tile[data-participant-id]`, yours `.tile--local`)
   * @param {boolean} options.isOwner the room's owner may lower others' hands
   * @param {(text: string) => void} options.notice shows a message above the stage
   * @param {() => void} options.changed the raised hands changed (the people list redraws)
   */
  constructor({ socket, button, stage, isOwner, notice, changed }) {
    this.requests = new Requests(socket, 'hand', ['hand_set', 'hand_lowered']);
    this.button = button;
    this.stage = stage;
    this.isOwner = isOwner;
    this.notice = notice;
    this.changed = changed;
    this.you = null;
    this.raised = new Map(); // participant id -> when the hand went up (ISO 8601), in that order
    this.lowering = false; // we asked to lower our own hand
    this.speakingTimer = 0;

    button.addEventListener('click', () => this.toggle());
    // Tiles come and go (people join, pages of tiles): each new one gets its mark.
    new MutationObserver(() => this.#markTiles()).observe(stage, { childList: true });
  }

  /** A (re)joined room's raised hands, in order, as its snapshot has them. */
  setSnapshot(hands, you) {
    this.you = you;
    this.raised = new Map(hands.map(({ participant_id: id, raised_at: at }) => [id, at]));
    this.#update();
  }

  /** The call ended: no hand is up. */
  clear() {
    this.raised.clear();
    this.#update();
  }

  /** Someone raised or lowered their hand (or the owner lowered it). */
  handChanged({ participant_id: id, raised, raised_at: at }) {
    if (raised) {
      this.raised.set(id, at);
      this.#sort();
    } else if (this.raised.delete(id) && id === this.you && !this.lowering) {
      this.notice(gettext('The room’s owner lowered your hand.'));
    }
    this.#update();
  }

  /** Someone left: their hand goes with them. */
  left(id) {
    if (this.raised.delete(id)) this.#update();
  }

  get ownRaised() {
    return this.you !== null && this.raised.has(this.you);
  }

  /** Raise your hand, or lower it. */
  async toggle() {
    if (this.button.hidden || this.button.disabled || this.you === null) return;
    await this.#setOwn(!this.ownRaised);
  }

  async #setOwn(raised) {
    this.button.setAttribute('aria-pressed', String(raised)); // at once; the reply confirms
    this.lowering = !raised;
    try {
      const reply = await this.requests.send({ type: 'hand', raised });
      this.handChanged({ participant_id: this.you, raised: reply.raised, raised_at: reply.raised_at });
    } catch (error) {
      this.notice(error.message || gettext('Your hand did not change. Please try again.'));
      this.#update();
    } finally {
      this.lowering = false;
    }
  }

  /** The owner lowers someone's hand (the people list's "Lower hand"). */
  async lowerFor(id) {
    try {
      await this.requests.send({ type: 'hand_lower', participant_id: id });
    } catch (error) {
      this.notice(error.message || gettext('The hand was not lowered. Please try again.'));
    }
  }

  /** You talk with your hand up: after a while it goes down by itself. */
  ownSpeaking(speaking) {
    clearTimeout(this.speakingTimer);
    if (!speaking || !this.ownRaised) return;
    this.speakingTimer = setTimeout(() => {
      if (!this.ownRaised) return;
      this.#setOwn(false);
      this.notice(gettext('Your hand was lowered: you are speaking.'));
    }, LOWER_AFTER_SPEAKING_MS);
  }

  /** People in the order the list shows them: raised hands first, as they went up. */
  ordered(participants) {
    const position = (p) => (this.raised.has(p.id) ? this.#position(p.id) : Infinity);
    return [...participants].sort((a, b) => position(a) - position(b)); // stable: join order
  }

  /** Add the hand's mark (and the owner's "Lower hand") to a person in the people list. */
  decorate(item, participant) {
    if (!this.raised.has(participant.id)) return;
    const place = this.#position(participant.id) + 1;
    item.classList.add('has-hand');
    const mark = document.createElement('span');
    mark.className = 'participant__hand';
    mark.textContent = `✋ ${place}`;
    mark.title = interpolate(gettext('Hand raised (%(place)s)'), { place: ordinal(place) });
    mark.setAttribute('role', 'img');
    mark.setAttribute('aria-label', interpolate(gettext('Hand raised, %(place)s'), { place: ordinal(place) }));
    item.querySelector('.participant__text')?.after(mark);
    if (this.isOwner && participant.id !== this.you) {
      const lower = document.createElement('button');
      lower.type = 'button';
      lower.className = 'button button--secondary button--small participant__lower';
      lower.textContent = gettext('Lower hand');
      const name = participant.name || gettext('Someone');
      lower.setAttribute('aria-label', interpolate(gettext('Lower the hand of %(name)s'), { name }));
      lower.addEventListener('click', () => this.lowerFor(participant.id));
      item.append(lower);
    }
  }

  #position(id) {
    return [...this.raised.keys()].indexOf(id);
  }

  #sort() {
    const byTime = [...this.raised].sort(([a, at], [b, bt]) => (at < bt ? -1 : at > bt ? 1 : a - b));
    this.raised = new Map(byTime);
  }

  #update() {
    this.button.setAttribute('aria-pressed', String(this.ownRaised));
    this.button.title = this.ownRaised ? gettext('Lower your hand (H)') : gettext('Raise your hand (H)');
    if (!this.ownRaised) clearTimeout(this.speakingTimer);
    this.#markTiles();
    this.changed();
  }

  /** A ✋ on the tile of each raised hand, and on no other. */
  #markTiles() {
    // A shared screen's tile (.tile--screen) is not the person: their camera's tile has it.
    for (const tile of this.stage.querySelectorAll('.tile:not(.tile--screen)')) {
      const id = tile.classList.contains('tile--local') ? this.you : Number(tile.dataset.participantId);
      const raised = id !== null && this.raised.has(id);
      let mark = tile.querySelector(':scope > .tile__hand');
      if (raised && !mark) {
        mark = document.createElement('span');
        mark.className = 'tile__hand';
        mark.textContent = '✋';
        mark.setAttribute('role', 'img');
        mark.setAttribute('aria-label', gettext('Hand raised'));
        tile.append(mark);
      } else if (!raised && mark) {
        mark.remove();
      }
    }
  }
}
