// The room page: joins the room's socket and keeps status, participants and header current.
import { Call } from './call.js';
import { Chat } from './chat.js';
import { ConnectionTest } from './connection-test.js';
import { ControlBar } from './controls.js';
import { Devices } from './devices.js';
import { Hands } from './hands.js';
import { Moderation } from './moderation.js';
import { gettext, interpolate, ngettext, pgettext } from './i18n.js';
import { Reactions } from './reactions.js';
import { Playback } from './playback.js';
import { Recording } from './recording.js';
import { RoomSocket } from './room-socket.js';

const config = JSON.parse(document.getElementById('room-config').textContent);
const $ = (id) => document.getElementById(id);
const ui = {
  status: $('room-status'),
  list: $('participants'),
  count: $('participant-count'),
  leave: $('leave-button'),
  join: $('join-button'),
  retry: $('retry-button'),
  lobby: $('lobby-link'),
  notice: $('room-notice'),
  announcer: $('announcer'),
  name: $('room-name'),
  description: $('room-description'),
  badges: $('room-badges'),
  capacity: $('room-capacity'),
  lockForm: $('lock-form'), // owners only
  lockButton: $('lock-button'),
  stage: $('stage'),
  mic: $('mic-button'),
  camera: $('camera-button'),
  layout: $('layout-button'),
  alreadyHere: $('already-here'), // who is in the room, on the pre-join screen
  prejoinRecording: $('prejoin-recording'), // "This meeting is being recorded."
  alsoYou: $('also-you'),
  ended: $('ended-message'), // what happened, after the call
  root: $('room'),
  clock: $('call-clock'),
  rejoin: $('rejoin-button'),
  people: $('people-button'),
  peopleCount: $('people-count'),
  topCount: $('top-count'),
  details: $('details-button'),
  devices: $('devices-button'),
  fullscreen: $('fullscreen-button'),
  share: $('share-button'),
  chat: $('chat-button'),
  hand: $('hand-button'),
  reactions: $('reactions-button'),
  secondTab: $('second-tab'),
  secondTabJoin: $('second-tab-join'),
  secondTabCancel: $('second-tab-cancel'),
  waitingCard: $('waiting-card'), // asking to join a room that lets people in one by one
  waitingMessage: $('waiting-message'),
  waitingCancel: $('waiting-cancel'),
};
const PANELS = {
  people: [ui.people, $('people-panel')],
  details: [ui.details, $('details-panel')],
  chat: [ui.chat, $('chat-panel')],
};

const ACTIVE = new Set(['joining', 'connected', 'reconnecting']);
// Asking to join a room that lets people in one by one: the pre-join screen stays.
const ASKING = new Set(['asking', 'waiting']);
const RETRYABLE = new Set(['full', 'locked', 'denied']); // refusals that may pass a moment later
const NOTICE_MS = 6_000;
const ANNOUNCEMENT_MS = 10_000;

const people = new Map(); // participant id -> participant, in join order
const talking = new Set(); // ids of the people talking now
let you = null; // this connection's participant id, from its snapshot
let state = 'ready'; // the pre-join screen: camera preview and a Join button
let countdown = 0;
let noticeTimer = 0;
let joinedAt = 0; // when this visit's call started (the clock in the top bar)
let clockTimer = 0;
let youElsewhere = Boolean(config.alsoHere); // this account is in the room in another tab
let currentRoom = null; // the room as the server last described it

// --- Rendering ------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const nameOf = (participant) => participant.name?.trim() || gettext('Someone');

/** Show a state in the status line; outside a live connection the list empties and Leave greys out. */
function setStatus(next, text, { retry = false } = {}) {
  clearInterval(countdown);
  state = next;
  ui.status.setAttribute('aria-live', 'polite');
  ui.status.dataset.state = next;
  ui.status.textContent = text;
  ui.leave.disabled = !ACTIVE.has(next);
  const phase = next === 'ready' || ASKING.has(next) ? 'prejoin' : ACTIVE.has(next) ? 'call' : 'ended';
  setPhase(phase);
  ui.waitingCard.hidden = !ASKING.has(next);
  ui.alreadyHere.hidden = next !== 'ready'; // the live list takes over
  ui.join.hidden = next !== 'ready';
  ui.secondTab.hidden = true;
  connectionTest.available = next === 'ready'; // the pre-join screen only; hiding it stops a test
  // Waiting to be let in is a good moment to fix a microphone: the pickers stay.
  devices.setMode(next === 'ready' || ASKING.has(next) ? 'prejoin' : ACTIVE.has(next) ? 'call' : 'off');
  ui.retry.hidden = !retry;
  ui.rejoin.hidden = next !== 'left';
  ui.lobby.hidden = phase !== 'ended';
  ui.ended.hidden = phase !== 'ended';
  ui.ended.textContent = phase === 'ended' ? text : '';
  ui.list.setAttribute('aria-busy', String(next === 'reconnecting'));
  if (!ACTIVE.has(next)) {
    people.clear();
    hands.clear();
    chat.clear();
    reactions.setOpen(false);
    renderParticipants();
  }
}

/**
 * The page's phase: the pre-join screen, the call filling the window, or what is left after
 * it (what happened, and where to go). The call's controls exist only during the call.
 */
function setPhase(phase) {
  if (ui.root.dataset.phase === phase) return;
  ui.root.dataset.phase = phase;
  document.body.classList.toggle('in-call', phase === 'call');
  if (phase === 'call') {
    joinedAt ||= Date.now();
    tickClock();
    clockTimer = setInterval(tickClock, 1000);
  } else {
    clearInterval(clockTimer);
    joinedAt = 0;
    openPanel(null);
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  }
  ui.clock.parentElement.hidden = phase !== 'call';
  ui.topCount.parentElement.hidden = phase !== 'call';
  call.layout.update();
}

/** How long you have been in the call: m:ss, or h:mm:ss. */
function tickClock() {
  const seconds = Math.floor((Date.now() - joinedAt) / 1000);
  const pad = (n) => String(n).padStart(2, '0');
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const text = hours
    ? `${hours}:${pad(minutes)}:${pad(seconds % 60)}`
    : `${minutes}:${pad(seconds % 60)}`;
  if (ui.clock.textContent !== text) ui.clock.textContent = text;
}

/** Open one side panel ('people', 'chat' or 'details') beside the call, or close it (null). */
function openPanel(name) {
  ui.root.dataset.panel = name ?? '';
  for (const [key, [button, panel]] of Object.entries(PANELS)) {
    button.setAttribute('aria-expanded', String(key === name));
    panel.classList.toggle('is-open', key === name);
  }
  chat.setOpen(name === 'chat');
  call.layout.update();
}

/** Change the status text without a screen reader announcement (countdown ticks). */
function setStatusQuietly(text) {
  ui.status.setAttribute('aria-live', 'off');
  ui.status.textContent = text;
}

function showCountdown(delay) {
  if (ASKING.has(state)) {
    ui.waitingMessage.textContent = gettext('Reconnecting…'); // still asking, once connected again
    return;
  }
  let seconds = Math.max(1, Math.round(delay / 1000));
  const inSeconds = () => interpolate(gettext('Reconnecting in %(seconds)s s…'), { seconds });
  setStatus('reconnecting', inSeconds());
  countdown = setInterval(() => {
    seconds -= 1;
    setStatusQuietly(seconds > 0 ? inSeconds() : gettext('Reconnecting…'));
    if (seconds <= 0) clearInterval(countdown);
  }, 1000);
}

function participantItem(participant) {
  const name = nameOf(participant);
  const item = el('li', 'participant');
  item.dataset.participantId = String(participant.id);
  const avatar = el('span', 'participant__avatar', [...name][0]);
  avatar.setAttribute('aria-hidden', 'true');
  const text = el('span', 'participant__text');
  text.append(el('span', 'participant__name', name));
  if (participant.id === you) {
    item.classList.add('is-you');
    text.append(el('span', 'participant__you', gettext('(you)')));
  } else if (participant.user_id === config.userId) {
    // Another tab or device of yours (or, briefly, a connection of yours that just dropped).
    text.append(el('span', 'participant__you', gettext('(also you)')));
  }
  item.append(avatar, text);
  // What they send: your own from this tab, the others' as they told the room.
  const media = participant.id === you ? ownMedia() : participant;
  if (media.publishing && media.audio === false) {
    item.append(el('span', 'badge badge--muted', gettext('muted')));
  }
  if (media.publishing && media.video === false) {
    item.append(el('span', 'badge badge--camera-off', gettext('camera off')));
  }
  if (participant.id === you ? call.sharing : participant.sharing) {
    item.append(el('span', 'badge badge--sharing', gettext('presenting')));
  }
  if (participant.is_owner) item.append(el('span', 'badge badge--owner', gettext('owner')));
  item.classList.toggle('is-speaking', talking.has(participant.id));
  hands.decorate(item, participant);
  moderation.decorate(item, participant);
  return item;
}

function ownMedia() {
  const publishing = call.hasTrack('audio') || call.hasTrack('video');
  return { publishing, ...call.mediaState() };
}

/** Someone started or stopped talking: the outline in the people list follows. */
function speakingChanged(id, speaking) {
  const participantId = id === 'you' ? you : id;
  if (participantId === null) return;
  if (speaking) talking.add(participantId);
  else talking.delete(participantId);
  if (id === 'you') hands.ownSpeaking(speaking);
  ui.list
    .querySelector(`[data-participant-id="${participantId}"]`)
    ?.classList.toggle('is-speaking', speaking);
}

/** A participant's media changed (published, unpublished, switched a device): redraw them. */
function updatePerson(id, changes) {
  const participant = people.get(id);
  if (!participant) return;
  people.set(id, { ...participant, ...changes });
  renderParticipants();
}

function renderParticipants() {
  ui.list.replaceChildren(...hands.ordered(people.values()).map(participantItem));
  syncTileMenus();
  ui.count.textContent = interpolate(gettext('In the room (%(count)s)'), { count: people.size });
  ui.count.dataset.count = String(people.size);
  ui.peopleCount.textContent = String(people.size);
  ui.topCount.textContent = String(people.size);
}

/** A moderator's menu on each other person's camera tile, as current as the people list. */
function syncTileMenus() {
  for (const tile of ui.stage.querySelectorAll('.tile[data-participant-id]:not(.tile--local)')) {
    const participant = people.get(Number(tile.dataset.participantId));
    const open = tile.querySelector(':scope > .tile__actions[open]');
    if (open) continue; // being used: the next redraw brings it up to date
    tile.querySelector(':scope > .tile__actions')?.remove();
    const menu = participant ? moderation.tileMenu(participant) : null;
    if (menu) tile.append(menu);
  }
}

/** The room's header, as includes/room_badges.html draws it, plus the owner's lock button. */
function showRoom(room) {
  currentRoom = room;
  updateShareButton();
  ui.name.textContent = room.name;
  document.title = interpolate(gettext('%(room)s · Conference'), { room: room.name });
  ui.description.textContent = room.description;
  ui.description.hidden = !room.description;
  const isPrivate = room.visibility === 'private';
  ui.badges.replaceChildren(
    el('span', `badge badge--${isPrivate ? 'private' : 'public'}`, isPrivate ? gettext('Private') : gettext('Public')),
  );
  if (room.locked) ui.badges.append(el('span', 'badge badge--locked', gettext('Locked')));
  if (room.ask_to_join) ui.badges.append(el('span', 'badge badge--asks', pgettext('room', 'Ask to join')));
  ui.capacity.textContent = String(room.max_participants);
  if (ui.lockForm) {
    ui.lockForm.elements.namedItem('locked').value = room.locked ? 'false' : 'true';
    ui.lockButton.textContent = room.locked ? gettext('Unlock room') : gettext('Lock room');
  }
}

/** Tell screen reader users what changed, without moving focus. */
function announce(text) {
  const line = el('p', null, text);
  ui.announcer.append(line);
  setTimeout(() => line.remove(), ANNOUNCEMENT_MS);
}

/** A message above the stage; it fades after a while unless it stays true (`persist`). */
function showNotice(text, { persist = false } = {}) {
  clearTimeout(noticeTimer);
  ui.notice.textContent = text;
  if (persist) return;
  noticeTimer = setTimeout(() => {
    ui.notice.textContent = '';
  }, NOTICE_MS);
}

// --- The connection -------------------------------------------------------------------------

const socket = new RoomSocket(config.wsPath, config.closeCodes);
const on = (type, handler) => socket.addEventListener(type, (event) => handler(event.detail ?? {}));
const call = new Call({
  socket,
  stage: ui.stage,
  notice: (text, options) => showNotice(text, options),
  healed: () => {
    showNotice(gettext('Media is back.'));
    announce(gettext('Media is back.'));
  },
  speaking: (id, speaking) => speakingChanged(id, speaking),
  pager: { root: $('pager'), previous: $('pager-previous'), next: $('pager-next'), where: $('pager-where') },
  userId: config.userId,
});

// "Test camera and connection" on the pre-join screen, on a socket of its own.
const connectionTest = new ConnectionTest({
  container: $('connection-test'),
  button: $('connection-test-button'),
  stream: () => call.preview(),
});

// The control bar: what does not fit a narrow screen goes into its More menu.
const controls = new ControlBar(
  document.querySelector('.call-controls'),
  $('more-button'),
  $('more-menu'),
);

// Camera, microphone and speaker: open, with a level meter, before joining; behind a button after.
const devices = new Devices({
  root: $('devices'),
  call,
  notice: (text) => showNotice(text),
  changed: () => updateDeviceButtons(),
});

// Working together: the chat panel, raised hands and reactions (docs/protocol.md).
const chat = new Chat({
  socket,
  panel: $('chat-panel'),
  unread: $('chat-unread'),
  isOwner: Boolean(config.isOwner),
  notice: (text) => showNotice(text),
});
const hands = new Hands({
  socket,
  button: ui.hand,
  stage: ui.stage,
  isOwner: Boolean(config.isOwner),
  notice: (text) => showNotice(text),
  changed: () => renderParticipants(),
});
const moderation = new Moderation({
  socket,
  userId: config.userId,
  isOwner: Boolean(config.isOwner),
  endButton: $('end-meeting-button'),
  notice: (text) => showNotice(text),
  announce: (text) => announce(text),
  changed: () => renderParticipants(),
  ownBlocked: (kind, blocked) => {
    // Blocked: this tab stops sending it too, and says so; allowed again: the person decides.
    const button = kind === 'audio' ? ui.mic : ui.camera;
    if (blocked && button.getAttribute('aria-pressed') !== 'true') toggleDevice(button, kind);
  },
  waitingUi: {
    section: $('waiting-section'),
    list: $('waiting-list'),
    heading: $('waiting-heading'),
    count: $('waiting-count'),
    admitAll: $('admit-all-button'),
    denyAll: $('deny-all-button'),
    allButtons: $('admit-all-button').parentElement,
  },
  muteAllButton: $('mute-all-button'),
});

const recording = new Recording({
  socket,
  indicator: $('recording-indicator'),
  tools: $('record-tools'),
  button: $('record-button'),
  isModerator: () => moderation.isModerator,
  notice: (text) => showNotice(text),
  announce: (text) => announce(text),
});
const playback = new Playback({
  socket,
  select: $('play-select'),
  playButton: $('play-button'),
  stopButton: $('play-stop-button'),
  nameOf: (id) => nameOf(people.get(id) ?? {}),
  notice: (text) => showNotice(text),
  announce: (text) => announce(text),
});
const reactions = new Reactions({
  socket,
  button: ui.reactions,
  menu: $('reactions-menu'),
  stage: ui.stage,
  notice: (text) => showNotice(text),
});

on('connecting', ({ attempt }) => {
  if (ASKING.has(state)) return; // asking again after a dropped connection: the card stays
  if (attempt === 0 && config.asksToJoin) {
    setStatus('asking', gettext('Asking to join…'));
    ui.waitingMessage.textContent = gettext('Asking to join…');
  } else if (attempt === 0) {
    setStatus('joining', gettext('Joining…'));
  } else {
    clearInterval(countdown); // the countdown may be cut short (the browser came back online)
    setStatusQuietly(gettext('Reconnecting…'));
  }
});

on('open', () => {
  you = null; // a new connection is a new participant; its snapshot says which
});

on('snapshot', (message) => {
  you = message.you;
  socket.resumeAs(you);
  people.clear();
  for (const participant of message.participants) people.set(participant.id, participant);
  chat.setHistory(message.chat ?? [], you);
  hands.setSnapshot(message.hands ?? [], you);
  moderation.setSnapshot(message, you);
  recording.setSnapshot(message);
  playback.setSnapshot(message, you);
  reactions.setYou(you);
  showRoom(message.room);
  setStatus('connected', gettext('Connected'));
  renderParticipants();
  call.setIce(message.ice);
  call.start(you, message.participants).then(() => {
    updateDeviceButtons();
    moderation.applyOwnBlocks();
  });
});

on('ice_servers', ({ ice }) => call.setIce(ice));

// A room that lets people in one by one: wait on the pre-join screen until a moderator decides.
on('waiting', ({ message }) => {
  setStatus('waiting', message);
  ui.waitingMessage.textContent = message;
  announce(message);
  ui.waitingCancel.focus();
});
on('admitted', () => {
  setStatus('joining', gettext('You were let in. Joining…'));
  announce(gettext('You were let in.'));
});
on('waiting_changed', (message) => moderation.waitingChanged(message));

on('chat_message', ({ message }) => chat.add(message));
on('chat_deleted', ({ message_id: id }) => chat.remove(id));
on('hand_changed', (message) => hands.handChanged(message));
on('moderators_changed', (message) => {
  moderation.moderatorsChanged(message);
  recording.refresh();
});
on('recording_changed', (message) => recording.changed(message));
on('media_blocked', (message) => moderation.mediaBlocked(message));
on('reaction', (message) => reactions.show(message));

on('participant_media', (message) => {
  call.mediaChanged(message);
  updatePerson(message.participant_id, { audio: message.audio, video: message.video });
});

// The media server let the room down; the call heals without a reload (docs/protocol.md).
const RESET_REASONS = {
  session_lost: () => gettext('The media server restarted. Reconnecting media…'),
  server_down: () =>
    gettext('The media server was lost; moving the call to another one. Reconnecting media…'),
};

on('media_reset', ({ reason }) => {
  // Shown until every connection is back (call.healed), or for a while if someone never is.
  showNotice(RESET_REASONS[reason]?.() || gettext('Reconnecting media…'), { persist: true });
  setTimeout(() => {
    if (call.healing) showNotice(gettext('Some pictures are still reconnecting…'));
  }, 15_000);
  announce(gettext('Reconnecting media…'));
  call.reset();
  playback.reset(); // a video played into the room does not survive its media server
});

on('media_interrupted', () => {
  showNotice(gettext('The media server cannot be reached. Reconnecting media…'), { persist: true });
  announce(gettext('Media interrupted. Reconnecting…'));
});

on('media_restored', () => {
  showNotice(gettext('Media is back.'));
  call.kick();
});

on('participant_published', ({ participant_id: id, source, title }) => {
  if (source === 'playback') {
    call.subscribeScreen(id, 'playback', title);
    playback.started(id, title);
    return;
  }
  if (source === 'screen') {
    call.subscribeScreen(id);
    updatePerson(id, { sharing: true });
    if (id !== you) {
      announce(interpolate(gettext('%(name)s is sharing their screen'), { name: nameOf(people.get(id) ?? {}) }));
    }
    return;
  }
  call.subscribe(id);
  updatePerson(id, { publishing: true });
  syncTileMenus();
});

on('participant_unpublished', ({ participant_id: id, source }) => {
  if (source === 'playback') {
    call.dropScreen(id, 'playback');
    playback.stopped(id);
    return;
  }
  if (source === 'screen') {
    call.dropScreen(id);
    updatePerson(id, { sharing: false });
    return;
  }
  call.dropLink(id);
  updatePerson(id, { publishing: false });
});

on('participant_joined', ({ participant }) => {
  const known = people.has(participant.id);
  people.set(participant.id, participant);
  moderation.joined(participant);
  call.joined(participant);
  renderParticipants();
  if (!known && you !== null && participant.id !== you) {
    announce(interpolate(gettext('%(name)s joined'), { name: nameOf(participant) }));
  }
});

on('participant_left', ({ participant_id: id, reason }) => {
  call.left(id);
  hands.left(id);
  moderation.left(id);
  const participant = people.get(id);
  if (!participant) return;
  people.delete(id);
  renderParticipants();
  if (reason !== 'removed' && id !== you) {
    announce(interpolate(gettext('%(name)s left'), { name: nameOf(participant) }));
  }
});

on('room_updated', ({ room }) => showRoom(room));

on('room_closed', ({ reason, message }) => {
  call.stop();
  // A meeting a moderator ended: the room stays, and the server's message says so.
  const text =
    reason === 'ended'
      ? message
      : interpolate(gettext('This room has been closed: %(message)s'), { message });
  setStatus('closed', text);
});

// A moderator removed you: the call ends here, with the server's reason; no retry.
on('participant_removed', ({ participant_id: id, message }) => {
  if (id !== you) return;
  call.stop();
  setStatus('removed', message);
});

on('refused', ({ reason, message }) => {
  setStatus('refused', message, { retry: RETRYABLE.has(reason) });
});

on('error', ({ code, message }) => {
  console.warn(`Room socket error ${code}: ${message}`);
  if (code === 'rate_limited') showNotice(message);
});

on('reconnecting', ({ delay }) => showCountdown(delay));

on('gaveup', () => {
  setStatus('error', gettext('Could not reconnect to the room. Check your connection, then try again.'), {
    retry: true,
  });
});

on('close', ({ code, final }) => {
  // A new connection is a new participant: its media starts afresh after the next snapshot.
  // The camera stays on (a refused person may try again); leaving turns it off.
  call.stopLinks();
  if (!final || !ACTIVE.has(state)) return; // a reconnect follows, or the page already says why
  if (code === config.closeCodes.left) {
    setStatus('left', gettext('You left the room.'));
  } else {
    const text = interpolate(gettext('You were disconnected from the room (code %(code)s).'), { code });
    setStatus('error', text, { retry: true });
  }
});

// --- Buttons and page life ------------------------------------------------------------------

ui.leave.addEventListener('click', async () => {
  ui.leave.disabled = true;
  call.stop();
  setStatus('left', gettext('You left the room.'));
  await socket.leave();
  location.assign(config.lobbyUrl);
});

// Lock and unlock in place: a page reload would make the owner leave and rejoin. The server's
// room_updated event redraws the button; without JavaScript the form posts as usual.
ui.lockForm?.addEventListener('submit', async (event) => {
  event.preventDefault();
  ui.lockButton.disabled = true;
  try {
    const response = await fetch(ui.lockForm.action, {
      method: 'POST',
      body: new FormData(ui.lockForm),
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
  } catch (error) {
    showNotice(gettext('Could not change the lock. Please try again.'));
    console.warn('Lock request failed', error);
  } finally {
    ui.lockButton.disabled = false;
  }
});

ui.retry.addEventListener('click', () => {
  socket.retry();
  ui.status.focus(); // the button hides itself; keep focus somewhere sensible
});

ui.waitingCancel.addEventListener('click', async () => {
  await socket.leave();
  showPreJoin();
  ui.join.focus();
});

function updateDeviceButtons() {
  for (const [button, kind] of [[ui.mic, 'audio'], [ui.camera, 'video']]) {
    button.hidden = !call.hasTrack(kind);
  }
}

/** A toggle: its label stays, its pressed state says whether the device is off. */
async function toggleDevice(button, kind) {
  if (button.hidden || button.disabled) return;
  const muted = button.getAttribute('aria-pressed') !== 'true';
  if (!muted && you !== null && moderation.isBlocked(you, kind)) {
    // A moderator blocked it: turn it back on only where the room lets people do so.
    if (!currentRoom?.self_unmute) {
      showNotice(
        kind === 'audio'
          ? gettext('A moderator muted you. Raise your hand to ask to speak.')
          : gettext('A moderator stopped your camera. Raise your hand to ask.'),
      );
      if (!hands.ownRaised) hands.toggle();
      return;
    }
    if (!(await moderation.unblockSelf(kind))) return;
  }
  call.setMuted(kind, muted);
  button.setAttribute('aria-pressed', String(muted));
  renderParticipants(); // your own muted / camera-off marks
}

// Sharing a screen: where the browser can, and the room lets you (everyone, or the owner).
const CAN_SHARE = Boolean(navigator.mediaDevices?.getDisplayMedia);

function updateShareButton() {
  const owner = Boolean(you !== null && people.get(you)?.is_owner);
  const allowed = currentRoom?.screen_sharing !== 'owner' || owner;
  ui.share.hidden = !CAN_SHARE || (!allowed && !call.sharing);
}

ui.share.addEventListener('click', async () => {
  if (call.sharing) {
    call.stopShare();
    return;
  }
  ui.share.disabled = true;
  try {
    await call.startShare();
  } catch (error) {
    // Cancelled in the browser's picker: nothing to say.
    if (error?.name !== 'NotAllowedError' && error?.name !== 'AbortError') {
      showNotice(
        interpolate(gettext('Could not share the screen (%(error)s).'), { error: error?.message || error }),
      );
    }
  } finally {
    ui.share.disabled = false;
  }
});

call.onShare = (sharing) => {
  ui.share.setAttribute('aria-pressed', String(sharing));
  announce(sharing ? gettext('You are sharing your screen.') : gettext('You stopped sharing your screen.'));
  updateShareButton();
  renderParticipants();
};

// The grid, or the speaker view (the pinned person, else whoever talks, large).
ui.layout.addEventListener('click', () => {
  const speaker = ui.layout.getAttribute('aria-pressed') !== 'true';
  call.layout.setMode(speaker ? 'speaker' : 'grid');
});
call.layout.onMode = (mode) => ui.layout.setAttribute('aria-pressed', String(mode === 'speaker'));

ui.mic.addEventListener('click', () => toggleDevice(ui.mic, 'audio'));
ui.camera.addEventListener('click', () => toggleDevice(ui.camera, 'video'));

// Keyboard: M for the microphone, V for the camera (as in Jitsi), unless typing somewhere.
// F for full screen, H to raise or lower your hand; Escape closes a popover or the side panel.
const SHORTCUTS = {
  m: () => toggleDevice(ui.mic, 'audio'),
  v: () => toggleDevice(ui.camera, 'video'),
  f: () => ui.fullscreen.hidden || ui.fullscreen.click(),
  h: () => hands.toggle(),
};
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && ui.root.dataset.phase === 'call') {
    if (controls.open) {
      controls.setOpen(false);
      $('more-button').focus();
    } else if (ui.devices.getAttribute('aria-expanded') === 'true') {
      ui.devices.click();
      ui.devices.focus();
    } else if (ui.root.dataset.panel) {
      const [button] = PANELS[ui.root.dataset.panel];
      openPanel(null);
      button.focus();
    }
    return;
  }
  const shortcut = SHORTCUTS[event.key?.toLowerCase()];
  if (!shortcut || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (ui.root.dataset.phase !== 'call') return;
  const target = event.target;
  if (target.closest?.('input, textarea, select, [contenteditable=""], [contenteditable="true"]')) {
    return;
  }
  event.preventDefault();
  shortcut();
});

// The side panel: people, the chat, or the room's details (the invite link, the owner's settings).
for (const [name, [button]] of Object.entries(PANELS)) {
  button.addEventListener('click', () => {
    openPanel(ui.root.dataset.panel === name ? null : name);
  });
}
for (const close of document.querySelectorAll('[data-close-panel]')) {
  close.addEventListener('click', () => {
    const name = ui.root.dataset.panel;
    openPanel(null);
    if (name) PANELS[name][0].focus();
  });
}

// Full screen: the call only (its bars included), where the browser allows it.
ui.fullscreen.hidden = !document.fullscreenEnabled;
ui.fullscreen.addEventListener('click', () => {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else ui.root.requestFullscreen?.().catch(() => showNotice(gettext('Full screen is not available here.')));
});
document.addEventListener('fullscreenchange', () => {
  ui.fullscreen.setAttribute('aria-pressed', String(Boolean(document.fullscreenElement)));
});

// Back online (a network change, waking from sleep): connections that broke start again now.
window.addEventListener('online', () => call.kick());

window.addEventListener('pagehide', () => {
  call.stop();
  if (ASKING.has(state)) socket.leave(); // out of the waiting list at once
  if (!ACTIVE.has(state)) return;
  socket.leave(); // best effort: the page may be gone before the server hears it
  setStatus('left', gettext('You left the room.'));
});

function join() {
  connectionTest.stop(); // its socket closes: the server releases the test
  ui.join.disabled = true;
  ui.secondTab.hidden = true;
  stopWatchingPresence();
  socket.retry();
  ui.status.focus();
}

ui.join.addEventListener('click', () => {
  // Already in the call elsewhere (another tab, another device): ask first.
  if (youElsewhere) {
    ui.secondTab.hidden = false;
    ui.secondTabJoin.focus();
    return;
  }
  join();
});
ui.secondTabJoin.addEventListener('click', join);
ui.secondTabCancel.addEventListener('click', () => {
  ui.secondTab.hidden = true;
  ui.join.focus();
});

ui.rejoin.addEventListener('click', () => {
  showPreJoin();
  ui.join.focus();
});

// --- Who is in the room, before joining (refreshed while the pre-join screen shows) -------

const PRESENCE_MS = 5_000;
let presenceTimer = 0;

async function refreshPresence() {
  presenceTimer = 0;
  if (state !== 'ready' || !config.presenceUrl) return;
  try {
    const response = await fetch(config.presenceUrl, {
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
    });
    if (response.ok) showPresence(await response.json());
  } catch {
    // offline for a moment: the next round tries again
  }
  if (state === 'ready' && !presenceTimer) presenceTimer = setTimeout(refreshPresence, PRESENCE_MS);
}

function stopWatchingPresence() {
  clearTimeout(presenceTimer);
  presenceTimer = 0;
}

function showPresence({ names = [], more = 0, you_elsewhere: elsewhere = false, recording: recorded = false }) {
  youElsewhere = Boolean(elsewhere);
  ui.alsoYou.hidden = !youElsewhere;
  ui.prejoinRecording.hidden = !recorded;
  const line = ui.alreadyHere.querySelector('p');
  if (!names.length) {
    line.textContent = gettext('Nobody is in the room yet.');
    return;
  }
  const values = { names: names.join(', '), count: more };
  line.textContent = more
    ? interpolate(
        ngettext(
          'In the room now: %(names)s and %(count)s other',
          'In the room now: %(names)s and %(count)s others',
          more,
        ),
        values,
      )
    : interpolate(gettext('In the room now: %(names)s'), values);
}

window.addEventListener('pageshow', (event) => {
  // Back from the back/forward cache after leaving: the pre-join screen again.
  if (event.persisted && state === 'left') showPreJoin();
});

function showPreJoin() {
  setStatus('ready', gettext('Check your camera and microphone, then join.'));
  ui.join.disabled = false;
  call.preview().then(updateDeviceButtons);
  stopWatchingPresence();
  refreshPresence();
}

showPreJoin();
ui.join.focus();
