// A virtual list: of thousands of rows of varying height, only those on
// screen (and a margin) are in the document. Each row's height is measured
// once rendered and remembered by key; rows not yet seen count with an
// estimate. Offsets are prefix sums, recomputed when a height or the items
// change; scrolling keeps the row at the top of the view where it was when
// rows above it change (older pages loaded, estimates corrected), and
// stays at the bottom when it was there.

const overscan = 600; // px rendered above and below the view

export class VList {
  // opts: key(item) -> string; sig(item, i) -> string (rows re-render when
  // it changes); render(item, i) -> Element; estimate(item, width) -> px;
  // onScroll() after each scroll.
  constructor(container, opts) {
    this.el = container;
    this.opts = opts;
    this.inner = document.createElement('div');
    this.inner.className = 'vlist-inner';
    this.el.replaceChildren(this.inner);
    this.items = [];
    this.heights = new Map(); // key -> measured px
    this.offsets = new Float64Array(1);
    this.dirty = true;
    this.rows = new Map(); // key -> {el, sig, i}
    // Scroll events come once a frame: rendering in the handler puts the
    // rows in place in the frame that shows them.
    this.el.addEventListener('scroll', () => {
      this.render(false, null);
      if (this.opts.onScroll) this.opts.onScroll();
    }, {passive: true});
    new ResizeObserver(() => {
      const bottom = this.atBottom(8);
      if (this.width !== this.el.clientWidth) {
        this.width = this.el.clientWidth;
        this.heights.clear(); // text wraps anew
        this.dirty = true;
      }
      this.render(bottom);
    }).observe(this.el);
    this.width = this.el.clientWidth;
  }

  atBottom(slack = 4) {
    return this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - slack;
  }

  // setItems replaces the items. keepBottom: follow the end if it was in
  // view; otherwise the first row in view stays where it is on screen.
  setItems(items) {
    const bottom = this.items.length === 0 || this.atBottom(8);
    const anchor = bottom ? null : this.anchor();
    this.items = items;
    this.dirty = true;
    if (this.heights.size > 2 * items.length + 1000) {
      // Forget the heights of rows long gone (a trimmed conversation).
      const keep = new Map();
      for (const it of items) {
        const k = this.opts.key(it);
        if (this.heights.has(k)) keep.set(k, this.heights.get(k));
      }
      this.heights = keep;
    }
    this.render(bottom, anchor);
  }

  // reset forgets the rows, for another list of items.
  reset() {
    for (const row of this.rows.values()) row.el.remove();
    this.rows.clear();
    this.items = [];
    this.dirty = true;
  }

  // refresh re-renders the rows in view whose sig changed.
  refresh() { this.render(this.atBottom(8), null); }

  scrollToBottom() {
    this.layout();
    this.el.scrollTop = this.el.scrollHeight;
    this.render(true, null);
  }

  // anchor returns the first row in view and its distance from the top.
  // The first item is a header that stays first when items are inserted
  // before the rest (older messages): the anchor is the row after it.
  anchor() {
    if (this.items.length === 0) return null;
    this.layout();
    return this.anchorFromRows();
  }

  height(item) {
    const h = this.heights.get(this.opts.key(item));
    return h !== undefined ? h : this.opts.estimate(item, this.width);
  }

  layout() {
    if (!this.dirty) return;
    const n = this.items.length;
    if (this.offsets.length < n + 1) this.offsets = new Float64Array(Math.max(n + 1, this.offsets.length * 2));
    let y = 0;
    for (let i = 0; i < n; i++) {
      this.offsets[i] = y;
      y += this.height(this.items[i]);
    }
    this.offsets[n] = y;
    this.total = y;
    this.inner.style.height = y + 'px';
    this.dirty = false;
  }

  // indexAt returns the index of the row at offset y.
  indexAt(y) {
    let lo = 0, hi = this.items.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.offsets[mid] <= y) lo = mid; else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  indexOfKey(key) {
    for (let i = 0; i < this.items.length; i++) if (this.opts.key(this.items[i]) === key) return i;
    return -1;
  }

  render(stickBottom, anchor) {
    // Up to a few passes: measuring may change heights, which moves rows.
    for (let pass = 0; pass < 4; pass++) {
      this.layout();
      if (stickBottom) {
        this.el.scrollTop = this.total;
      } else if (anchor) {
        const i = this.indexOfKey(anchor.key);
        if (i >= 0) this.el.scrollTop = this.offsets[i] - anchor.delta;
      }
      const top = this.el.scrollTop - overscan;
      const bottom = this.el.scrollTop + this.el.clientHeight + overscan;
      const n = this.items.length;
      const first = n ? this.indexAt(Math.max(0, top)) : 0;
      const keep = new Set();
      const placed = [];
      // Write every row first, then measure them all: one layout.
      for (let i = first; i < n && this.offsets[i] < bottom; i++) {
        const item = this.items[i];
        const key = this.opts.key(item);
        const sig = this.opts.sig(item, i);
        keep.add(key);
        let row = this.rows.get(key);
        if (!row || row.sig !== sig) {
          const el = this.opts.render(item, i);
          el.classList.add('row');
          if (row) row.el.replaceWith(el); else this.inner.appendChild(el);
          row = {el, sig};
          this.rows.set(key, row);
        }
        row.el.style.transform = `translateY(${this.offsets[i]}px)`;
        placed.push([item, key, row.el]);
      }
      for (const [key, row] of this.rows) {
        if (!keep.has(key)) {
          row.el.remove();
          this.rows.delete(key);
        }
      }
      // The document's order is the list's, for screen readers and for
      // whoever reads the rows in order.
      let prev = null;
      for (const [, , el] of placed) {
        const want = prev ? prev.nextSibling : this.inner.firstChild;
        if (want !== el) this.inner.insertBefore(el, want);
        prev = el;
      }
      let changed = false;
      for (const [item, key, el] of placed) {
        const h = el.offsetHeight;
        if (h > 0 && this.heights.get(key) !== h) {
          if (this.height(item) !== h) changed = true;
          this.heights.set(key, h);
        }
      }
      if (!changed) return;
      this.dirty = true;
      if (!stickBottom && !anchor) anchor = this.anchorFromRows();
    }
  }

  // anchorFromRows is anchor() computed from the offsets before a change.
  anchorFromRows() {
    if (this.items.length === 0) return null;
    let i = this.indexAt(this.el.scrollTop);
    if (i === 0 && this.items.length > 1) i = 1;
    return {key: this.opts.key(this.items[i]), delta: this.offsets[i] - this.el.scrollTop};
  }

  // rendered returns the items whose rows are in the document, in order.
  rendered() {
    return this.items.filter(it => this.rows.has(this.opts.key(it)));
  }
}
