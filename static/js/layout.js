// How the tiles share the stage: an adaptive grid (the largest 16:9 tiles that fit the stage's
// width and the window's height below where the stage starts, so the whole call shows without
// scrolling), or a speaker view (the pinned person, else the active speaker, large; the others
// in a strip). Tiles sized for more room than is on screen would push people below the fold,
// where their video is switched off (call.js): the grid never does.

const ASPECT = 16 / 9;
const GAP_PX = 12; // the stage's grid gap (app.css, --space-3)
const MIN_STAGE_PX = 240;
const BOTTOM_MARGIN_PX = 16;

/** Columns and tile width that make `count` 16:9 tiles as large as possible in width x height. */
export function bestGrid(count, width, height) {
  let best = { columns: 1, tileWidth: Math.max(0, width) };
  let bestWidth = 0;
  for (let columns = 1; columns <= Math.max(1, count); columns += 1) {
    const rows = Math.ceil(count / columns);
    const byWidth = (width - GAP_PX * (columns - 1)) / columns;
    const byHeight = ((height - GAP_PX * (rows - 1)) / rows) * ASPECT;
    const tileWidth = Math.floor(Math.min(byWidth, byHeight));
    if (tileWidth >= bestWidth) { // on a tie, more columns: fewer rows, a shorter stage
      bestWidth = tileWidth;
      best = { columns, tileWidth };
    }
  }
  return best;
}

export class StageLayout {
  /** @param {HTMLElement} stage the element whose children are the tiles */
  constructor(stage) {
    this.stage = stage;
    this.mode = 'grid';
    this.onMode = () => {}; // told when the mode changes (pinning switches to the speaker view)
    this.pinned = null; // a tile pinned large (its participant id)
    this.active = null; // the active speaker, from SpeakingMonitor
    this.frame = 0;
    new ResizeObserver(() => this.update()).observe(stage);
    new MutationObserver(() => this.update()).observe(stage, { childList: true });
    window.addEventListener('resize', () => this.update());
    this.update();
  }

  setMode(mode) {
    if (mode === 'grid') this.pinned = null; // back to the grid: nobody stays pinned
    this.mode = mode;
    this.onMode(mode);
    this.update();
  }

  /** Pin a participant's tile (again: unpin). Pinning shows the speaker view. */
  togglePin(id) {
    this.pinned = this.pinned === id ? null : id;
    if (this.pinned !== null && this.mode !== 'speaker') {
      this.mode = 'speaker';
      this.onMode(this.mode);
    }
    this.update();
    return this.pinned === id;
  }

  setActive(id) {
    this.active = id;
    if (this.mode === 'speaker' && this.pinned === null) this.update();
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
    this.stage.dataset.layout = this.mode;
    const byId = (id) => tiles.find((t) => t.dataset.participantId === String(id));
    const main =
      this.mode === 'speaker'
        ? byId(this.pinned) ?? byId(this.active) ?? tiles.find((t) => !t.classList.contains('tile--local'))
        : null;
    for (const tile of tiles) {
      tile.classList.toggle('tile--main', tile === main);
      const pinned = tile.dataset.participantId === String(this.pinned);
      tile.classList.toggle('tile--pinned', pinned);
      tile.querySelector('.tile__pin')?.setAttribute('aria-pressed', String(pinned));
    }
    if (this.mode !== 'grid' || !tiles.length) {
      this.stage.style.removeProperty('--columns');
      this.stage.style.removeProperty('--tile-width');
      return;
    }
    const top = this.stage.getBoundingClientRect().top + window.scrollY; // in the page
    const height = Math.max(MIN_STAGE_PX, window.innerHeight - top - BOTTOM_MARGIN_PX);
    const { columns, tileWidth } = bestGrid(tiles.length, this.stage.clientWidth, height);
    this.stage.style.setProperty('--columns', String(columns));
    this.stage.style.setProperty('--tile-width', `${tileWidth}px`);
  }
}
