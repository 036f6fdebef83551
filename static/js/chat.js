// The call's chat: a side panel with the room's messages and a box to write one.
//
// Messages are plain text. They are put on the page as text nodes only; the one thing made of
// them is a link, for an http(s) address that `new URL` accepts, built as an element whose text
// is the address as written. Nothing anyone sends ever reaches the page as HTML.
import { gettext, interpolate, language, ngettext } from './i18n.js';
import { Requests } from './requests.js';

const URL_PATTERN = /https?:\/\/[^\s<>"]+/gi;
// Punctuation that ends a sentence rather than an address ("see https://example.org.").
const TRAILING = /[.,;:!?'")\]}>]+$/;
const NEAR_BOTTOM_PX = 48; // closer than this to the end, the log follows new messages

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An http(s) link for `text`, or null when it is not one. */
function linkFor(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  const link = el('a', 'chat-message__link', text);
  link.href = url.href;
  link.target = '_blank';
  link.rel = 'noopener noreferrer nofollow';
  return link;
}

/** Closing brackets that belong to the address: as many as it opened ("…/Foo_(bar)"). */
function trimTrailing(candidate) {
  const match = candidate.match(TRAILING);
  if (!match) return candidate;
  let end = candidate.length - match[0].length;
  for (const char of match[0]) {
    const open = { ')': '(', ']': '[', '}': '{' }[char];
    const head = candidate.slice(0, end);
    if (open && head.split(open).length > head.split(char).length) end += 1;
    else break;
  }
  return candidate.slice(0, end);
}

/** The nodes of a message's text: text nodes, and links for the web addresses in it. */
export function textNodes(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const candidate = trimTrailing(match[0]);
    const link = linkFor(candidate);
    if (!link) continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    nodes.push(link);
    last = match.index + candidate.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

// Times as the page's language writes them (and in the browser's own time zone).
const timeFormat = new Intl.DateTimeFormat(language(), { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(language(), { dateStyle: 'medium', timeStyle: 'short' });

export class Chat {
  /**
   * @param {object} options
   * @param {import('./room-socket.js').RoomSocket} options.socket
   * @param {HTMLElement} options.panel the chat's side-panel section (#chat-panel)
   * @param {HTMLElement} options.unread the count on the chat button
   * @param {boolean} options.isOwner the room's owner may delete any message
   * @param {(text: string) => void} options.notice shows a message above the stage
   */
  constructor({ socket, panel, unread, isOwner, notice }) {
    this.requests = new Requests(socket, 'chat', ['chat_sent', 'chat_deleted']);
    this.log = panel.querySelector('#chat-log');
    this.empty = panel.querySelector('#chat-empty');
    this.form = panel.querySelector('#chat-form');
    this.input = panel.querySelector('#chat-input');
    this.sendButton = panel.querySelector('#chat-send');
    this.unreadBadge = unread;
    this.isOwner = isOwner;
    this.notice = notice;
    this.you = null; // this connection's participant id
    this.open = false; // the panel shows
    this.unread = 0;
    this.sending = false;

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener('keydown', (event) => {
      // Enter sends; Shift+Enter is a new line; Enter that confirms an input method's word too.
      if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      this.send();
    });
    this.log.addEventListener('click', (event) => {
      const button = event.target.closest('.chat-message__delete');
      if (button) this.delete(Number(button.closest('.chat-message').dataset.messageId));
    });
  }

  /** A (re)joined room's history, as its snapshot has it: it replaces what was shown. */
  setHistory(messages, you) {
    this.you = you;
    this.log.replaceChildren(...messages.map((message) => this.#item(message)));
    this.#updateEmpty();
    this.log.scrollTop = this.log.scrollHeight;
  }

  /** A message someone posted (you included: your own comes back too). */
  add(message) {
    if (this.log.querySelector(`[data-message-id="${message.id}"]`)) return; // shown already
    const follow = this.#nearBottom();
    this.log.append(this.#item(message));
    this.#updateEmpty();
    if (follow || message.participant_id === this.you) this.log.scrollTop = this.log.scrollHeight;
    if (!this.open && message.participant_id !== this.you) this.#setUnread(this.unread + 1);
  }

  /** A message was deleted for everyone. */
  remove(messageId) {
    this.log.querySelector(`[data-message-id="${messageId}"]`)?.remove();
    this.#updateEmpty();
  }

  /** The panel opened or closed: opening it reads what was unread. */
  setOpen(open) {
    this.open = open;
    if (open) {
      this.#setUnread(0);
      this.log.scrollTop = this.log.scrollHeight;
    }
  }

  /** The call ended: nothing of it stays on the page. */
  clear() {
    this.log.replaceChildren();
    this.#updateEmpty();
    this.#setUnread(0);
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || this.sending) return;
    this.sending = true;
    this.sendButton.disabled = true;
    try {
      const { message } = await this.requests.send({ type: 'chat_send', text });
      // Keep what was typed meanwhile; clear what was sent.
      if (this.input.value.trim() === text) this.input.value = '';
      this.add(message);
    } catch (error) {
      this.notice(error.message || gettext('Your message was not sent. Please try again.'));
    } finally {
      this.sending = false;
      this.sendButton.disabled = false;
    }
  }

  async delete(messageId) {
    try {
      await this.requests.send({ type: 'chat_delete', message_id: messageId });
      this.remove(messageId);
    } catch (error) {
      this.notice(error.message || gettext('The message was not deleted. Please try again.'));
    }
  }

  #item(message) {
    const item = el('article', 'chat-message');
    item.dataset.messageId = String(message.id);
    if (message.participant_id !== null && message.participant_id === this.you) {
      item.classList.add('is-you');
    }
    const meta = el('p', 'chat-message__meta');
    const name = message.name?.trim() || gettext('Someone');
    meta.append(el('span', 'chat-message__name', name), ' ');
    const sent = new Date(message.sent_at);
    const time = el('time', 'chat-message__time', timeFormat.format(sent));
    time.dateTime = message.sent_at;
    time.title = dateTimeFormat.format(sent);
    meta.append(time);
    const text = el('p', 'chat-message__text');
    text.append(...textNodes(message.text));
    item.append(meta, text);
    if (this.isOwner) {
      const remove = el('button', 'chat-message__delete', gettext('Delete'));
      remove.type = 'button';
      remove.setAttribute('aria-label', interpolate(gettext('Delete this message of %(name)s'), { name }));
      meta.append(remove);
    }
    return item;
  }

  #nearBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < NEAR_BOTTOM_PX;
  }

  #updateEmpty() {
    this.empty.hidden = this.log.childElementCount > 0;
  }

  #setUnread(count) {
    this.unread = count;
    this.unreadBadge.hidden = count === 0;
    // The figure shows; screen readers hear the whole phrase (its word order is the language's).
    const figure = el('span', null, String(count > 99 ? '99+' : count));
    figure.setAttribute('aria-hidden', 'true');
    const phrase = ngettext('%(count)s unread message', '%(count)s unread messages', count);
    this.unreadBadge.replaceChildren(figure, ' ', el('span', 'visually-hidden', interpolate(phrase, { count })));
  }
}
