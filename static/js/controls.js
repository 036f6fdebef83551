// The call's control bar on any width: when its buttons do not fit (a phone), the least needed
// ones move into a "More" menu, in their order, and come back when there is room again. A
// button's `data-overflow` says how readily it moves (higher first); buttons without it (the
// microphone, the camera, Leave) always stay in the bar. Moved buttons keep their ids, labels
// and listeners: they are the same elements.

export class ControlBar {
  /**
   * @param {HTMLElement} bar the toolbar
   * @param {HTMLButtonElement} more the "More" button (in the bar)
   * @param {HTMLElement} menu where moved buttons go (a popover above the bar)
   */
  constructor(bar, more, menu) {
    this.bar = bar;
    this.more = more;
    this.menu = menu;
    this.fitting = false;
    // Where each movable button belongs in the bar: a marker just before it.
    this.movable = [...bar.querySelectorAll('[data-overflow]')].map((button) => {
      const slot = document.createComment(button.id);
      button.before(slot);
      return { button, slot, rank: Number(button.dataset.overflow) };
    });
    more.addEventListener('click', () => this.setOpen(menu.hidden));
    // A choice in the menu closes it (after the button did its work).
    menu.addEventListener('click', (event) => {
      if (event.target.closest('button')) setTimeout(() => this.setOpen(false));
    });
    document.addEventListener('pointerdown', (event) => {
      if (!menu.hidden && !menu.contains(event.target) && !more.contains(event.target)) {
        this.setOpen(false);
      }
    });
    new ResizeObserver(() => this.fit()).observe(bar);
    // A button shown or hidden (sharing allowed, devices found) changes what fits.
    const watch = new MutationObserver(() => this.fit());
    for (const place of [bar, menu]) {
      watch.observe(place, { subtree: true, attributeFilter: ['hidden'] });
    }
    this.fit();
  }

  get open() {
    return !this.menu.hidden;
  }

  setOpen(open) {
    if (this.menu.hidden === open) this.menu.hidden = !open;
    this.more.setAttribute('aria-expanded', String(open));
    if (open) this.menu.querySelector('button:not([hidden])')?.focus();
  }

  /** Everything back in the bar, then out to the menu, least needed first, until it fits. */
  fit() {
    if (this.fitting) return;
    this.fitting = true;
    try {
      // (Buttons already in the bar stay put: moving one would take the focus from it.)
      for (const { button, slot } of this.movable) {
        if (button.parentElement !== this.bar) slot.after(button);
      }
      if (!this.more.hidden) this.more.hidden = true;
      if (!this.#overflows()) {
        this.setOpen(false);
        return;
      }
      this.more.hidden = false;
      const byRank = [...this.movable].sort((a, b) => b.rank - a.rank);
      const moved = [];
      for (const entry of byRank) {
        if (!this.#overflows()) break;
        if (entry.button.hidden) continue;
        moved.push(entry);
        entry.button.remove(); // out of the bar; into the menu below, in the bar's order
      }
      const order = this.movable.filter((entry) => moved.includes(entry));
      this.menu.replaceChildren(...order.map(({ button }) => button));
    } finally {
      // The observers see our own moves: let them pass before listening again.
      queueMicrotask(() => {
        this.fitting = false;
      });
    }
  }

  #overflows() {
    return this.bar.scrollWidth > this.bar.clientWidth + 1;
  }
}
