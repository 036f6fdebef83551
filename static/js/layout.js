// How the tiles share the stage. Every visible tile is placed by hand (absolute positions inside
// the stage), from the stage's own size, so the call always fits the window without scrolling:
// - the grid: the largest tiles that fit the count in the stage (16:9; on a portrait stage, as
//   tall as 3:4, so a phone's screen is not mostly empty);
// - the speaker view: the pinned person, else the active speaker, large; the others in a strip
//   below it;
// - while someone shares a screen, the presentation: the newest share large (unless another
//   tile is pinned), everyone else in the strip, whatever the chosen view.
// Past what fits (the grid's tiles would get too small; the strip is full), the others go on
// pages. Tiles off the page are not displayed, so their video is switched off (call.js watches
// which tiles are on screen): a 30-person call costs only the pictures on the page.

import { gettext, interpolate } from './i18n.js';

const LANDSCAPE = 16 / 9;
const PORTRAIT = 3 / 4;
const GAP_PX = 8;
const MAX_PER_PAGE = 16;
const MIN_TILE_PX = 160; // narrower tiles go to the next page (unless the stage itself is narrower)
const STRIP = { share: 0.2, min: 64, max: 132 }; // the speaker view's strip height

/**
 * The grid with the largest tiles for `count` tiles in width x height: how many columns and
 * the tiles' size. On a landscape stage tiles are 16:9; on a portrait one they may be taller.
 */
export function bestGrid(count, width, height) {
  const n = Math.max(1, count);
  const widest = LANDSCAPE;
  const tallest = height > width ? PORTRAIT : LANDSCAPE;
  let best = { columns: 1, rows: n, tileWidth: 0, tileHeight: 0 };
  for (let columns = 1; columns <= n; columns += 1) {
    const rows = Math.ceil(n / columns);
    const cellWidth = (width - GAP_PX * (columns - 1)) / columns;
    const cellHeight = (height - GAP_PX * (rows - 1)) / rows;
    if (cellWidth <= 0 || cellHeight <= 0) continue;
    const tileWidth = Math.floor(Math.min(cellWidth, cellHeight * widest));
    const tileHeight = Math.floor(Math.min(cellHeight, tileWidth / tallest));
    // On a tie, more columns: fewer rows.
    if (tileWidth * tileHeight >= best.tileWidth * best.tileHeight) {
      best = { columns, rows, tileWidth, tileHeight };
    }
  }
  return best;
}

/** How many tiles one page of the grid holds in width x height. */
export function pageSize(width, height) {
  const smallest = Math.min(MIN_TILE_PX, width);
  let size = 1;
  for (let n = 2; n <= MAX_PER_PAGE; n += 1) {
    if (bestGrid(n, width, height).tileWidth >= smallest) size = n;
  }
  return size;
}

/** The speaker view's parts in width x height: the large tile's size and the strip's. */
export function speakerParts(width, height, others) {
  if (!others) {
    const { tileWidth, tileHeight } = bestGrid(1, width, height);
    return { main: { width: tileWidth, height: tileHeight }, strip: null };
  }
  const stripHeight = Math.round(Math.min(STRIP.max, Math.max(STRIP.min, height * STRIP.share)));
  const stripWidth = Math.floor(stripHeight * LANDSCAPE);
  const fits = Math.max(1, Math.floor((width + GAP_PX) / (stripWidth + GAP_PX)));
  const { tileWidth, tileHeight } = bestGrid(1, width, height - stripHeight - GAP_PX);
  return {
    main: { width: tileWidth, height: tileHeight },
    strip: { width: stripWidth, height: stripHeight, perPage: fits },
  };
}

export class StageLayout {
  /**
   * @param {HTMLElement} stage the element whose children are the tiles
   * @param {{root: HTMLElement, previous: HTMLButtonElement, next: HTMLButtonElement,
   *   where: HTMLElement}} [pager] the page controls (hidden while everyone fits)
   */
  constructor(stage, pager = null) {
    this.stage = stage;
    this.pager = pager;
    this.mode = 'grid';
    this.onMode = () => {}; // told when the mode changes (pinning switches to the speaker view)
    this.pinned = null; // a tile pinned large (its key: a participant id, or `screen:<id>`)
    this.active = null; // the active speaker, from SpeakingMonitor
    this.shares = []; // keys of the screen tiles, newest last
    this.page = 0;
    this.pages = 1;
    this.frame = 0;
    new ResizeObserver(() => this.update()).observe(stage);
    new MutationObserver(() => this.update()).observe(stage, { childList: true });
    pager?.previous.addEventListener('click', () => this.turn(-1));
    pager?.next.addEventListener('click', () => this.turn(1));
    this.update();
  }

  setMode(mode) {
    if (mode === 'grid') this.pinned = null; // back to the grid: nobody stays pinned
    this.mode = mode;
    this.page = 0;
    this.onMode(mode);
    this.update();
  }

  /** Pin a tile (again: unpin) by its key. Pinning shows the speaker view. */
  togglePin(key) {
    key = String(key);
    this.pinned = this.pinned === key ? null : key;
    if (this.pinned !== null && this.mode !== 'speaker') {
      this.mode = 'speaker';
      this.page = 0;
      this.onMode(this.mode);
    }
    this.update();
    return this.pinned === key;
  }

  /** A screen tile appeared (its key): it is presented large, as the newest share. */
  presented(key) {
    this.shares = [...this.shares.filter((k) => k !== key), key];
    this.page = 0;
    this.update();
  }

  setActive(id) {
    this.active = id;
    if (this.mode === 'speaker' && this.pinned === null) this.update();
  }

  /** Another page of people (-1 back, +1 on). */
  turn(step) {
    this.page = Math.min(this.pages - 1, Math.max(0, this.page + step));
    this.update();
  }

  /** Lay the tiles out on the next frame (many changes in one go cost one layout). */
  update() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.#layOut();
    });
  }

  #layOut() {
    const tiles = [...this.stage.children];
    const width = this.stage.clientWidth;
    const height = this.stage.clientHeight;
    const byKey = (key) => tiles.find((t) => keyOf(t) === String(key));
    this.shares = this.shares.filter((key) => byKey(key)); // shares that ended
    const share = this.shares.length ? byKey(this.shares.at(-1)) : null;
    const mode = share ? 'presentation' : this.mode;
    this.stage.dataset.layout = mode;
    const main =
      mode === 'grid'
        ? null
        : (byKey(this.pinned) ??
          share ??
          byKey(this.active) ??
          tiles.find((t) => !t.classList.contains('tile--local')) ??
          tiles[0]);
    for (const tile of tiles) {
      tile.classList.toggle('tile--main', tile === main);
      const pinned = keyOf(tile) === String(this.pinned);
      tile.classList.toggle('tile--pinned', pinned);
      tile.querySelector('.tile__pin')?.setAttribute('aria-pressed', String(pinned));
    }
    if (!tiles.length || !width || !height) {
      this.#showPager(1);
      return;
    }
    if (main) this.#speaker(main, tiles.filter((t) => t !== main), width, height);
    else this.#grid(tiles, width, height);
  }

  #grid(tiles, width, height) {
    const perPage = pageSize(width, height);
    const shown = this.#pageOf(tiles, perPage);
    const { columns, tileWidth, tileHeight } = bestGrid(shown.length, width, height);
    const rows = Math.ceil(shown.length / columns);
    const top = Math.floor((height - rows * tileHeight - (rows - 1) * GAP_PX) / 2);
    shown.forEach((tile, index) => {
      const row = Math.floor(index / columns);
      const inRow = row === rows - 1 ? shown.length - row * columns : columns; // the last row centred
      const left = Math.floor((width - inRow * tileWidth - (inRow - 1) * GAP_PX) / 2);
      place(tile, {
        left: left + (index % columns) * (tileWidth + GAP_PX),
        top: top + row * (tileHeight + GAP_PX),
        width: tileWidth,
        height: tileHeight,
      });
    });
  }

  #speaker(main, others, width, height) {
    const parts = speakerParts(width, height, others.length);
    const mainTop = Math.max(0, Math.floor((height - parts.main.height - (parts.strip ? parts.strip.height + GAP_PX : 0)) / 2));
    place(main, {
      left: Math.floor((width - parts.main.width) / 2),
      top: mainTop,
      ...parts.main,
    });
    if (!parts.strip) {
      this.#showPager(1);
      return;
    }
    const { width: w, height: h, perPage } = parts.strip;
    const shown = this.#pageOf(others, perPage);
    const left = Math.floor((width - shown.length * w - (shown.length - 1) * GAP_PX) / 2);
    const top = mainTop + parts.main.height + GAP_PX;
    shown.forEach((tile, index) => {
      place(tile, { left: left + index * (w + GAP_PX), top, width: w, height: h });
    });
  }

  /** The tiles on this page (the others are taken off the stage), and the pager to match. */
  #pageOf(tiles, perPage) {
    const pages = Math.max(1, Math.ceil(tiles.length / perPage));
    this.page = Math.min(this.page, pages - 1);
    const shown = tiles.slice(this.page * perPage, (this.page + 1) * perPage);
    for (const tile of tiles) tile.classList.toggle('tile--off-page', !shown.includes(tile));
    this.#showPager(pages);
    return shown;
  }

  #showPager(pages) {
    this.pages = pages;
    this.stage.dataset.pages = String(pages);
    this.stage.dataset.page = String(this.page + 1);
    if (!this.pager) return;
    this.pager.root.hidden = pages <= 1;
    this.pager.where.textContent = `${this.page + 1} / ${pages}`;
    this.pager.where.setAttribute(
      'aria-label',
      interpolate(gettext('Page %(page)s of %(pages)s'), { page: this.page + 1, pages }),
    );
    this.pager.previous.disabled = this.page === 0;
    this.pager.next.disabled = this.page >= pages - 1;
  }
}

/** A tile's key: `screen:<id>` (or 'share', yours) for a shared screen, else the participant's id. */
function keyOf(tile) {
  return tile.dataset.tileKey ?? tile.dataset.participantId ?? 'you';
}

function place(tile, { left, top, width, height }) {
  tile.classList.remove('tile--off-page');
  Object.assign(tile.style, {
    left: `${left}px`,
    top: `${top}px`,
    width: `${width}px`,
    height: `${height}px`,
  });
}
