// The chart area: one collapsible section per key prefix (train/, val/, …, system/,
// other), one chart per numeric key. Used by the workspace (many runs or groups) and by
// the run page (one run); what a chart draws comes from the `load` function given.
//
//   const panels = new ChartPanels(host, {load, collapsed, onCollapse, view});
//   load(key, {buckets, minStep, maxStep, only, signal}) → Promise<line[]> (see charts.js)
//     minStep/maxStep: the zoomed step range or undefined; only: a Set of line ids to
//     re-read (live updates) or null for all.
//   panels.setKeys(keys)            which charts exist
//   panels.setView({xKind, smoothing, stepOnly})   redraw (an x axis change resets zooms)
//   panels.reload()                 every chart re-reads (visible ones now, others when
//                                   scrolled into view)
//   panels.refresh(ids)             charts re-read the lines of these ids only
//   panels.destroy()
//
// Charts load lazily (IntersectionObserver) and at most 4 at once.
// Test hooks: section-<name>, section-toggle-<name>, chart-<key>, chart-reset-<key>.

import { h, clear } from "./dom.js";
import { LineChart } from "./charts.js";

const MAX_BUCKETS = 1500;
const PARALLEL = 4;

export function sectionOf(key) {
  const i = key.indexOf("/");
  return i > 0 ? key.slice(0, i) : "other";
}

// Section names in display order: train, val, other prefixes A–Z, system, other.
export function sectionOrder(names) {
  const rank = (n) => (n === "train" ? 0 : n === "val" ? 1 : n === "system" ? 3 : n === "other" ? 4 : 2);
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

// A tiny queue: at most PARALLEL load jobs run at once.
class Limiter {
  constructor(n) { this.n = n; this.running = 0; this.queue = []; }
  run(job) {
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.next();
    });
  }
  next() {
    while (this.running < this.n && this.queue.length) {
      const { job, resolve, reject } = this.queue.shift();
      this.running += 1;
      Promise.resolve().then(job).then(resolve, reject).finally(() => { this.running -= 1; this.next(); });
    }
  }
}

export class ChartPanels {
  constructor(host, { load, collapsed = [], onCollapse = null, view = {}, emptyText = "No metrics logged yet." }) {
    this.host = host;
    this.load = load;
    this.collapsed = new Set(collapsed);
    this.onCollapse = onCollapse;
    this.view = { xKind: "step", smoothing: 0, stepOnly: false, ...view };
    this.emptyText = emptyText;
    this.keys = [];
    this.panels = new Map();   // key → ChartPanel
    this.limiter = new Limiter(PARALLEL);
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const p = e.target._panel;
        if (!p) continue;
        p.visible = e.isIntersecting;
        if (p.visible && p.dirty) p.fetch();
      }
    }, { rootMargin: "600px 0px" });
    host.classList.add("chart-area");
  }

  destroy() {
    this.observer.disconnect();
    for (const p of this.panels.values()) p.destroy();
    this.panels.clear();
    clear(this.host);
  }

  setKeys(keys) {
    const same = keys.length === this.keys.length && keys.every((k, i) => k === this.keys[i]);
    if (same && this.host.childElementCount) return;
    this.keys = [...keys];
    this.build();
  }

  build() {
    // Keep the panels of keys that stay (their data and zoom), drop the others.
    const keep = new Set(this.keys);
    for (const [k, p] of this.panels) {
      if (!keep.has(k)) { p.destroy(); this.panels.delete(k); }
    }
    for (const el of [...this.host.children]) el.remove();
    if (!this.keys.length) {
      this.host.append(h("div", { class: "empty", text: this.emptyText, testid: "charts-empty" }));
      return;
    }
    const bySection = new Map();
    for (const k of this.keys) {
      const sec = sectionOf(k);
      if (!bySection.has(sec)) bySection.set(sec, []);
      bySection.get(sec).push(k);
    }
    for (const name of sectionOrder(bySection.keys())) {
      const keys = bySection.get(name);
      const isCollapsed = this.collapsed.has(name);
      const grid = h("div", { class: "chart-grid" });
      const toggle = h("button", {
        class: "section-toggle", testid: `section-toggle-${name}`,
        text: `${isCollapsed ? "▸" : "▾"} ${name}`, attrs: { "aria-expanded": String(!isCollapsed) },
      });
      const section = h("section", { class: `chart-section${isCollapsed ? " collapsed" : ""}`, testid: `section-${name}` },
        h("header", {}, toggle, h("span", { class: "muted", text: ` ${keys.length} chart${keys.length === 1 ? "" : "s"}` })),
        grid);
      toggle.addEventListener("click", () => this.toggleSection(name));
      for (const k of keys) {
        let p = this.panels.get(k);
        if (!p) { p = new ChartPanel(this, k); this.panels.set(k, p); }
        grid.append(p.el);
        if (!isCollapsed) this.observer.observe(p.el); else this.observer.unobserve(p.el);
      }
      this.host.append(section);
    }
    for (const p of this.panels.values()) p.chart.render();
  }

  toggleSection(name) {
    if (this.collapsed.has(name)) this.collapsed.delete(name); else this.collapsed.add(name);
    this.build();
    if (this.onCollapse) this.onCollapse([...this.collapsed]);
  }

  setView(view) {
    const xChanged = view.xKind !== undefined && view.xKind !== this.view.xKind;
    this.view = { ...this.view, ...view };
    for (const p of this.panels.values()) {
      if (xChanged && p.zoom) { p.zoom = null; p.markDirty(); } else p.draw();
    }
  }

  reload() {
    for (const p of this.panels.values()) p.markDirty();
  }

  refresh(ids) {
    const only = new Set(ids);
    for (const p of this.panels.values()) {
      if (p.visible && !p.dirty && !p.loading) p.fetch(only); else p.dirty = true;
    }
  }
}

class ChartPanel {
  constructor(panels, key) {
    this.panels = panels;
    this.key = key;
    this.lines = [];
    this.zoom = null;        // {x: [lo, hi], steps: [lo, hi]} after a drag
    this.visible = false;
    this.dirty = true;       // needs a (re)load when visible
    this.loading = false;
    this.error = null;
    this.abort = null;
    this.seq = 0;
    this.resetBtn = h("button", {
      class: "btn small link chart-reset", text: "reset zoom", testid: `chart-reset-${key}`,
      style: { visibility: "hidden" }, on: { click: () => this.resetZoom() },
    });
    const body = h("div", { class: "chart-body" });
    this.el = h("div", { class: "chart-card", testid: `chart-${key}`, dataset: { key } },
      h("div", { class: "chart-head" }, h("h3", { text: key, title: key }), this.resetBtn), body);
    this.el._panel = this;
    this.chart = new LineChart(body, {
      onZoom: (z) => this.setZoom(z),
      onReset: () => this.resetZoom(),
    });
  }

  destroy() {
    if (this.abort) this.abort.abort();
    this.panels.observer.unobserve(this.el);
    this.chart.destroy();
    this.el._panel = null;
  }

  markDirty() {
    this.dirty = true;
    if (this.visible) this.fetch();
  }

  setZoom(z) {
    if (this.panels.view.stepOnly || this.chart.xKind === "step") z = { ...z, steps: [Math.floor(z.x[0]), Math.ceil(z.x[1])] };
    this.zoom = z;
    this.fetch();
  }

  resetZoom() {
    if (!this.zoom) return;
    this.zoom = null;
    this.fetch();
  }

  // Read this chart's lines (only: a Set of ids to re-read and merge, or null for all).
  async fetch(only = null) {
    if (this.abort && !only) this.abort.abort();
    const abort = new AbortController();
    if (!only) this.abort = abort;
    const seq = ++this.seq;
    this.dirty = false;
    this.loading = true;
    if (!only && !this.lines.length) this.draw("Loading…");
    const buckets = Math.min(MAX_BUCKETS, Math.max(100, Math.round(this.chart.plotWidth())));
    const steps = this.zoom ? this.zoom.steps : null;
    try {
      const lines = await this.panels.limiter.run(() => this.panels.load(this.key, {
        buckets,
        minStep: steps ? Math.max(0, steps[0]) : undefined,
        maxStep: steps ? Math.max(steps[0], steps[1], 1) : undefined,
        only,
        signal: abort.signal,
      }));
      if (seq !== this.seq && !only) return;   // a newer full load is on its way
      if (only) {
        const fresh = new Map(lines.map((l) => [l.id, l]));
        this.lines = this.lines.map((l) => fresh.get(l.id) || l);
        for (const l of lines) if (!this.lines.some((x) => x.id === l.id)) this.lines.push(l);
      } else {
        this.lines = lines;
      }
      this.error = null;
    } catch (e) {
      if (e.name === "AbortError") return;
      this.error = e.message;
    } finally {
      if (seq === this.seq) this.loading = false;
    }
    this.draw();
    // Changes that arrived while loading: read again (all lines).
    if (this.dirty && this.visible && !this.loading) this.fetch();
  }

  draw(message = null) {
    const v = this.panels.view;
    this.resetBtn.style.visibility = this.zoom ? "visible" : "hidden";
    this.chart.setModel({
      lines: this.lines,
      xKind: v.stepOnly ? "step" : v.xKind,
      xDomain: this.zoom ? this.zoom.x : null,
      smoothing: v.smoothing,
      message: message || (this.error ? `Error: ${this.error}` : null),
    });
  }
}
