// The lobby: keeps each room card's live count and its Full, Locked and Closed badges current by
// polling rooms:live (docs/protocol.md, "Presence over HTTP"). The page reads fine without it.

const POLL_EVERY_MS = 5_000;
const BACKOFF_MAX_MS = 60_000;
// Badges this page keeps, in the order room_badges.html puts them (after Private or Public).
const KINDS = ['locked', 'closed', 'full'];

const config = JSON.parse(document.getElementById('lobby-config').textContent);

/** slug -> the cards showing that room (a public room of yours is in both lists). */
const cards = new Map();
for (const card of document.querySelectorAll('[data-room-slug]')) {
  const slug = card.dataset.roomSlug;
  if (!cards.has(slug)) cards.set(slug, []);
  cards.get(slug).push(card);
}

let delay = POLL_EVERY_MS;
let timer = 0;
let polling = false;

function setText(node, text) {
  // Only real changes touch the page (no live region here: a count changing says nothing).
  if (node && node.textContent !== text) node.textContent = text;
}

function setBadge(badges, kind, shown) {
  const badge = badges.querySelector(`.badge--${kind}`);
  if (!shown) {
    badge?.remove();
    return;
  }
  if (badge) return;
  const made = document.createElement('span');
  made.className = `badge badge--${kind}`;
  made.textContent = config.labels[kind];
  const later = KINDS.slice(KINDS.indexOf(kind) + 1)
    .map((other) => badges.querySelector(`.badge--${other}`))
    .find(Boolean);
  badges.insertBefore(made, later ?? null);
}

function render(card, room) {
  setText(card.querySelector('.live-count'), String(room.count));
  setText(card.querySelector('.live-max'), String(room.max));
  const badges = card.querySelector('.badges');
  if (!badges) return;
  setBadge(badges, 'locked', room.locked);
  setBadge(badges, 'closed', room.closed);
  setBadge(badges, 'full', !room.closed && room.count >= room.max);
}

async function fetchLive(slugs) {
  const url = new URL(config.liveUrl, window.location.href);
  url.searchParams.set('rooms', slugs.join(','));
  const response = await fetch(url, {
    headers: { Accept: 'application/json' },
    credentials: 'same-origin',
    cache: 'no-store',
    redirect: 'error',
  });
  if (!response.ok) throw new Error(`rooms:live answered ${response.status}`);
  return (await response.json()).rooms;
}

async function poll() {
  clearTimeout(timer);
  timer = 0;
  if (polling || document.hidden) return; // the poll under way, or the page's return, goes on
  polling = true;
  try {
    const slugs = [...cards.keys()];
    const batches = [];
    for (let i = 0; i < slugs.length; i += config.maxRooms) {
      batches.push(slugs.slice(i, i + config.maxRooms));
    }
    for (const rooms of await Promise.all(batches.map(fetchLive))) {
      for (const [slug, room] of Object.entries(rooms)) {
        for (const card of cards.get(slug) ?? []) render(card, room);
      }
    }
    delay = POLL_EVERY_MS;
  } catch {
    // Offline, a server restart, a logged-out session: ask again later, less often.
    delay = Math.min(delay * 2, BACKOFF_MAX_MS);
  } finally {
    polling = false;
  }
  if (!document.hidden) timer = setTimeout(poll, delay);
}

if (cards.size) {
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = 0;
    } else {
      poll(); // at once: what the page shows may be long out of date
    }
  });
  poll(); // at once too: the Full badge is only drawn here
}
