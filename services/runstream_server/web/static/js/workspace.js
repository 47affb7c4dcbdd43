// The project workspace: #/p/<entity>/<project>.
//
//   mount(root, {entity, project}) → {unmount()}
//
// Data flow (everything is derived from the workspace state, see state.js):
//   filters + search + sort + page  → GET /runs (one table page)
//   filters + search + sort + N     → GET /runs?hidden=0&limit=N… → the visualized runs
//   visualized runs × metric keys   → GET /history per chart (charts load lazily)
//   groupBy set                     → GET /bands per chart instead (one line per group)
//   live SSE messages               → re-read table, visualized runs and the series of
//                                     changed runs, at most once a second
// Changes to hidden / colour / name are PATCHed to the run AND (hidden, colour) kept in
// the workspace state, which is saved (debounced) to the server.
//
// Test hooks: run-search, run-search-regex, run-total, run-visualized,
// visualized-count, group-by, band-kind, x-axis, smoothing, column-chooser,
// table-expand, plus those of runs_table.js, filters.js, panels.js and charts.js.

import * as api from "./api.js";
import { h, clear, debounce, throttle, confirmDialog, toast } from "./dom.js";
import { runColor, runHidden, assignColors, groupColor } from "./colors.js";
import { displayJson } from "./format.js";
import { filterParams, renderFilterBar } from "./filters.js";
import { RunsTable } from "./runs_table.js";
import { ChartPanels } from "./panels.js";
import { openColumnChooser, COLUMN_LIMIT } from "./column_chooser.js";
import { openLive } from "./live.js";
import { WorkspaceState, currentUser, signedInUser } from "./state.js";

const REFRESH_AFTER_CHANGE_MS = 1200;   // changes show in reads within about a second
const KEYS_REFRESH_MS = 5000;

export function mount(root, { entity, project }) {
  const ws = new Workspace(root, entity, project);
  ws.start();
  return { unmount: () => ws.stop() };
}

class Workspace {
  constructor(root, entity, project) {
    this.root = root;
    this.entity = entity;
    this.project = project;
    this.state = new WorkspaceState(entity, project, currentUser());
    this.offset = 0;
    this.page = { runs: [], total: 0 };
    this.vis = [];               // the visualized runs, in sort order
    this.visSignature = "";
    this.keys = [];
    this.groupColors = new Map();
    this.autoColors = new Map();  // run_id → default colour of the visualized runs
    this.changed = new Set();    // run ids changed by live messages, not yet applied
    this.seq = { table: 0, vis: 0 };
    this.timers = new Set();
    this.stopped = false;
    this.applyLive = throttle(() => this.flushLive(), 1000);
    this.refreshKeysSoon = throttle(() => this.refreshKeys(), KEYS_REFRESH_MS);
    this.onUnload = () => this.state.flush();
  }

  get s() {
    return this.state.get();
  }

  async start() {
    clear(this.root);
    this.root.append(h("div", { class: "loading", text: "Loading workspace…" }));
    await this.state.load();
    if (this.stopped) return;
    this.build();
    this.state.subscribe((changed) => this.onStateChange(changed));
    window.addEventListener("beforeunload", this.onUnload);
    await Promise.all([this.refreshTable(), this.refreshVisualized(true), this.refreshKeys(), this.loadGroupOptions()]);
    if (this.stopped) return;
    this.live = openLive(this.entity, this.project, (msg) => this.onLive(msg),
      { onReconnect: () => this.refreshAll() });
  }

  stop() {
    this.stopped = true;
    this.state.flush();
    window.removeEventListener("beforeunload", this.onUnload);
    if (this.live) this.live.close();
    this.applyLive.cancel();
    this.refreshKeysSoon.cancel();
    for (const t of this.timers) clearTimeout(t);
    if (this.panels) this.panels.destroy();
  }

  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); if (!this.stopped) fn(); }, ms);
    this.timers.add(t);
  }

  isHidden = (run) => runHidden(this.s, run);
  colorOf = (run) => runColor(this.s, run, this.autoColors);

  // --- layout ------------------------------------------------------------------------

  build() {
    const s = this.s;
    clear(this.root);

    this.totalEl = h("span", { class: "count", testid: "run-total", text: "…" });
    this.visEl = h("span", { class: "count", testid: "run-visualized", text: "…" });
    this.visInput = h("input", {
      type: "number", min: "0", max: "1000", value: String(s.visualized), testid: "visualized-count",
      class: "num-input", title: "How many runs the charts draw",
    });
    this.visInput.addEventListener("change", () => {
      const n = Math.max(0, Math.min(1000, Math.round(Number(this.visInput.value) || 0)));
      this.visInput.value = String(n);
      this.state.update({ visualized: n });
    });

    this.search = h("input", { type: "search", placeholder: "Search runs by name…", value: s.search, testid: "run-search", class: "search" });
    // Typing is applied 250 ms after the last key, or at once when the field loses focus;
    // until then syncControls() leaves the field alone.
    this.typedSearch = null;
    const applySearch = debounce(() => {
      const search = this.typedSearch;
      this.typedSearch = null;
      if (search !== null) this.state.update({ search });
    }, 250);
    this.search.addEventListener("input", () => { this.typedSearch = this.search.value; applySearch(); });
    this.search.addEventListener("blur", () => applySearch.flush());
    this.regexBtn = h("button", {
      class: "btn small toggle", text: ".*", testid: "run-search-regex", title: "Search with a regular expression",
      on: { click: () => this.state.update((st) => ({ regex: !st.regex })) },
    });
    this.searchError = h("span", { class: "form-error", testid: "search-error" });

    this.filterHost = h("div", { class: "filter-bar" });
    this.groupSel = h("select", { testid: "group-by", title: "Group runs by a config value" }, h("option", { value: "", text: "No grouping" }));
    this.groupSel.addEventListener("change", () => this.state.update({ groupBy: this.groupSel.value }));
    this.bandSel = h("select", { testid: "band-kind", title: "Shaded band of grouped charts" },
      h("option", { value: "std", text: "mean ± std" }), h("option", { value: "minmax", text: "min – max" }));
    this.bandSel.addEventListener("change", () => this.state.update({ band: this.bandSel.value }));
    this.xSel = h("select", { testid: "x-axis", title: "X axis" },
      h("option", { value: "step", text: "Step" }), h("option", { value: "wall", text: "Wall time" }),
      h("option", { value: "relative", text: "Relative time" }));
    this.xSel.addEventListener("change", () => this.state.update({ xAxis: this.xSel.value }));
    this.smooth = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", testid: "smoothing", title: "Smoothing (EMA)" });
    this.smoothVal = h("span", { class: "muted small smooth-val" });
    this.smooth.addEventListener("input", () => { this.smoothVal.textContent = Number(this.smooth.value).toFixed(2); });
    this.smooth.addEventListener("change", () => this.state.update({ smoothing: Number(this.smooth.value) }));
    this.colBtn = h("button", { class: "btn small", text: "Columns", testid: "column-chooser", title: "Choose config / summary columns" });
    this.colBtn.addEventListener("click", () => openColumnChooser(this.colBtn, {
      fetchColumns: (prefix) => api.listColumns(this.entity, this.project, prefix, COLUMN_LIMIT),
      chosen: this.s.columns,
      onChange: (columns) => this.state.update({ columns }),
    }));
    this.expandBtn = h("button", {
      class: "btn small", testid: "table-expand",
      on: { click: () => this.state.update((st) => ({ expanded: !st.expanded })) },
    });

    const head = h("div", { class: "ws-head" },
      h("h2", {}, h("a", { href: "#/", text: "Projects" }), " / ", h("span", { text: `${this.entity}/${this.project}` })),
      h("div", { class: "ws-counts" }, this.totalEl, " · ", this.visEl,
        h("label", { class: "inline", title: "Maximum runs drawn" }, " draw up to ", this.visInput)));
    const toolbar = h("div", { class: "ws-toolbar" },
      h("div", { class: "tool-group" }, this.search, this.regexBtn, this.searchError),
      this.filterHost,
      h("div", { class: "tool-group" }, h("label", { class: "inline" }, "Group ", this.groupSel), this.bandSel),
      h("div", { class: "tool-group" }, this.colBtn, this.expandBtn),
      h("div", { class: "tool-group" }, h("label", { class: "inline" }, "X ", this.xSel),
        h("label", { class: "inline" }, "Smoothing ", this.smooth, this.smoothVal)));

    this.tableHost = h("aside", { class: "ws-runs" });
    this.chartHost = h("div", { class: "ws-charts" });
    this.body = h("div", { class: "ws-body" }, this.tableHost, this.chartHost);
    this.root.append(h("div", { class: "workspace", testid: "workspace" }, head, toolbar, this.body));

    this.table = new RunsTable(this.tableHost, {
      onSort: (key) => this.state.update((st) => ({
        sort: { key, desc: st.sort.key === key ? !st.sort.desc : key !== "name" && key !== "user" },
      })),
      onPage: (offset) => { this.offset = offset; this.refreshTable(); },
      onPageSize: (n) => this.state.update({ pageSize: n }),
      onRemoveColumn: (col) => this.state.update((st) => ({ columns: st.columns.filter((c) => c !== col) })),
      onAction: (a, run, arg) => this.action(a, run, arg),
    });
    this.panels = new ChartPanels(this.chartHost, {
      load: (key, opts) => (this.s.groupBy ? this.loadGroups(key, opts) : this.loadRuns(key, opts)),
      collapsed: s.collapsed,
      onCollapse: (collapsed) => this.state.update({ collapsed }),
      view: this.chartView(),
      emptyText: "No metrics logged in this project yet.",
    });
    this.syncControls();
  }

  chartView() {
    const s = this.s;
    return { xKind: s.xAxis, smoothing: s.smoothing, stepOnly: !!s.groupBy };
  }

  // Make the controls show the state (after a load or a change made elsewhere).
  syncControls() {
    const s = this.s;
    if (this.typedSearch === null && document.activeElement !== this.search) this.search.value = s.search;
    this.regexBtn.classList.toggle("on", s.regex);
    this.regexBtn.setAttribute("aria-pressed", String(s.regex));
    this.search.placeholder = s.regex ? "Search runs by name (regex)…" : "Search runs by name…";
    this.visInput.value = String(s.visualized);
    this.ensureGroupOption(s.groupBy);
    this.groupSel.value = s.groupBy;
    this.bandSel.value = s.band;
    this.bandSel.disabled = !s.groupBy;
    this.xSel.value = s.xAxis;
    this.xSel.disabled = !!s.groupBy;
    this.xSel.title = s.groupBy ? "Grouped charts use steps" : "X axis";
    this.smooth.value = String(s.smoothing);
    this.smoothVal.textContent = s.smoothing.toFixed(2);
    this.expandBtn.textContent = s.expanded ? "Show charts" : "Expand table";
    this.body.classList.toggle("expanded", s.expanded);
    renderFilterBar(this.filterHost, {
      filters: s.filters,
      onChange: (filters) => this.state.update({ filters }),
      columns: (prefix) => api.listColumns(this.entity, this.project, prefix, COLUMN_LIMIT),
    });
  }

  ensureGroupOption(value) {
    if (!value || [...this.groupSel.options].some((o) => o.value === value)) return;
    this.groupSel.append(h("option", { value, text: value.replace(/^config\./, "") }));
  }

  async loadGroupOptions() {
    try {
      const cols = await api.listColumns(this.entity, this.project, "", 500);
      for (const k of cols.config || []) this.ensureGroupOption(`config.${k}`);
      this.groupSel.value = this.s.groupBy;
    } catch (e) {
      console.warn("config columns not loaded:", e.message);
    }
  }

  onStateChange(changed) {
    const c = new Set(changed);
    this.syncControls();
    const query = ["search", "regex", "filters", "sort"].some((k) => c.has(k));
    if (query || c.has("pageSize")) this.offset = 0;
    if (query || c.has("pageSize")) this.refreshTable();
    if (query || c.has("visualized") || c.has("hidden")) this.refreshVisualized(true);
    if (c.has("colors")) this.autoColors = assignColors(this.s, this.vis);
    if (c.has("columns") || c.has("hidden") || c.has("colors")) this.renderTable();
    if (c.has("groupBy") || c.has("band")) {
      if (c.has("groupBy")) this.groupColors.clear();
      this.panels.setView(this.chartView());
      this.panels.reload();
      this.renderCounts();
    } else if (c.has("colors") && !query) {
      this.panels.reload();
    }
    if (c.has("xAxis") || c.has("smoothing")) this.panels.setView(this.chartView());
  }

  // --- reading -----------------------------------------------------------------------

  queryPairs() {
    const s = this.s;
    return [...filterParams(s), ["sort", s.sort.key], ["desc", s.sort.desc ? "1" : "0"]];
  }

  // An error message when the regex search cannot be a valid regular expression (checked
  // here with JavaScript's syntax, less a leading (?i)-style flag group that RE2 allows),
  // so no request fails; "" otherwise. The server (RE2) has the last word.
  regexError() {
    const s = this.s;
    if (!s.regex || !s.search.trim()) return "";
    try {
      new RegExp(s.search.trim().replace(/^\(\?[imsU]+\)/, ""));
      return "";
    } catch (e) {
      return `Not a valid regular expression: ${e.message}`;
    }
  }

  async refreshTable() {
    const seq = ++this.seq.table;
    const s = this.s;
    const bad = this.regexError();
    if (bad) {
      this.searchError.textContent = bad;
      this.page = { runs: [], total: 0 };
      this.renderTable();
      this.renderCounts();
      return;
    }
    try {
      const ans = await api.listRuns(this.entity, this.project,
        [...this.queryPairs(), ["limit", s.pageSize], ["offset", this.offset]]);
      if (seq !== this.seq.table || this.stopped) return;
      this.page = { runs: ans.runs || [], total: ans.total || 0 };
      this.searchError.textContent = "";
      if (this.offset > 0 && this.offset >= this.page.total) {   // the page emptied: go back
        this.offset = Math.max(0, Math.floor((this.page.total - 1) / s.pageSize) * s.pageSize);
        this.refreshTable();
        return;
      }
    } catch (e) {
      if (seq !== this.seq.table || this.stopped) return;
      if (e.status === 400) this.searchError.textContent = e.message;
      else if (e.status !== 404) toast(`Runs not loaded: ${e.message}`, "error");   // 404: no runs yet
      this.page = { runs: [], total: 0 };
    }
    this.renderTable();
    this.renderCounts();
  }

  // Read the first N non-hidden runs; reload the charts when they changed (or force).
  async refreshVisualized(force = false) {
    const seq = ++this.seq.vis;
    const s = this.s;
    let runs = [];
    if (s.visualized > 0 && !this.regexError()) {
      // The workspace may hide runs the server does not know hidden yet: ask for more.
      const extra = Object.values(s.hidden).filter(Boolean).length;
      try {
        const ans = await api.listRuns(this.entity, this.project,
          [...this.queryPairs(), ["hidden", "0"], ["limit", Math.min(1000, s.visualized + extra)], ["offset", 0]]);
        if (seq !== this.seq.vis || this.stopped) return false;
        runs = (ans.runs || []).filter((r) => !this.isHidden(r)).slice(0, s.visualized);
      } catch (e) {
        if (seq !== this.seq.vis || this.stopped) return false;
        runs = [];
      }
    }
    this.vis = runs;
    this.autoColors = assignColors(this.s, runs);
    const sig = runs.map((r) => `${r.run_id}|${r.name}|${this.colorOf(r)}|${r.start_time_us}`).join(",");
    const changed = force || sig !== this.visSignature;
    this.visSignature = sig;
    this.renderCounts();
    this.renderTable();
    if (changed && !this.s.groupBy) this.panels.reload();
    if (force && this.s.groupBy) this.panels.reload();
    return changed;
  }

  async refreshKeys() {
    try {
      const ans = await api.listKeys(this.entity, this.project, "", 1000);
      if (this.stopped) return;
      this.keys = ans.keys || [];
      this.panels.setKeys(this.keys);
    } catch (e) {
      if (this.stopped) return;
      if (e.status === 404) this.panels.setKeys([]);   // the project has no runs (yet)
      else toast(`Metric keys not loaded: ${e.message}`, "error");
    }
  }

  refreshAll() {
    this.refreshTable();
    this.refreshVisualized();
  }

  renderTable() {
    if (!this.table) return;
    this.table.render({
      runs: this.page.runs,
      total: this.page.total,
      offset: this.offset,
      pageSize: this.s.pageSize,
      columns: this.s.columns,
      sort: this.s.sort,
      isHidden: this.isHidden,
      colorOf: this.colorOf,
      visualized: new Set(this.vis.map((r) => r.run_id)),
      runHref: (r) => `#/r/${encodeURIComponent(this.entity)}/${encodeURIComponent(this.project)}/${encodeURIComponent(r.run_id)}`,
    });
  }

  renderCounts() {
    const total = this.page.total;
    this.totalEl.textContent = `${total} run${total === 1 ? "" : "s"}`;
    this.visEl.textContent = `${this.vis.length} visualized`;
    this.visEl.title = this.s.groupBy
      ? "Grouped charts draw every matching, non-hidden run as group means"
      : `The first ${this.s.visualized} non-hidden runs in the table's order`;
  }

  // --- chart data ----------------------------------------------------------------------

  async loadRuns(key, { buckets, minStep, maxStep, only, signal }) {
    const runs = only ? this.vis.filter((r) => only.has(r.run_id)) : this.vis;
    if (!runs.length) return [];
    const series = await api.projectHistory(this.entity, this.project, {
      runs: runs.map((r) => r.run_id), keys: [key], buckets, minStep, maxStep, signal,
    });
    const byRun = new Map(series.map((sr) => [sr.run_id, sr]));
    return runs.filter((r) => byRun.has(r.run_id)).map((r) => {
      const sr = byRun.get(r.run_id);
      return {
        id: r.run_id, kind: "run", label: r.name || r.run_id, color: this.colorOf(r),
        step: sr.step || [], value: sr.value || [], time_us: sr.time_us || [], start_us: r.start_time_us || null,
        lo: sr.downsampled ? sr.min : null, hi: sr.downsampled ? sr.max : null,
      };
    });
  }

  async loadGroups(key, { buckets, minStep, maxStep, signal }) {
    const s = this.s;
    if (this.regexError()) return [];
    const ans = await api.bands(this.entity, this.project, {
      key, groupBy: s.groupBy, buckets, minStep, maxStep, signal,
      filterPairs: [...filterParams(s), ["hidden", "0"]],
    });
    const groups = [...(ans.groups || [])].sort((a, b) => String(a.group).localeCompare(String(b.group)));
    const field = s.groupBy.replace(/^config\./, "");
    return groups.map((g) => {
      if (!this.groupColors.has(g.group)) this.groupColors.set(g.group, groupColor(this.groupColors.size));
      const mean = (g.mean || []).map(Number);
      const std = (g.std || []).map(Number);
      const minmax = s.band === "minmax";
      const label = g.group === "" || g.group === null ? `${field} unset` : displayJson(g.group);
      return {
        id: label, kind: "group", label: `${field}=${label}`, count: g.count,
        color: this.groupColors.get(g.group), step: g.step || [], value: mean,
        lo: minmax ? g.min : mean.map((m, i) => m - (std[i] || 0)),
        hi: minmax ? g.max : mean.map((m, i) => m + (std[i] || 0)),
      };
    });
  }

  // --- live ----------------------------------------------------------------------------

  onLive({ runs, deleted }) {
    for (const r of runs) this.changed.add(r.run_id);
    for (const id of deleted) this.changed.add(id);
    this.applyLive();
  }

  async flushLive() {
    if (this.stopped) return;
    const ids = [...this.changed];
    this.changed.clear();
    this.refreshTable();
    const setChanged = await this.refreshVisualized();
    if (this.s.groupBy) this.panels.reload();
    else if (!setChanged) {
      const visIds = new Set(this.vis.map((r) => r.run_id));
      const mine = ids.filter((id) => visIds.has(id));
      if (mine.length) this.panels.refresh(mine);
    }
    this.refreshKeysSoon();
  }

  // --- actions -------------------------------------------------------------------------

  async action(a, run, arg) {
    const { entity, project } = this;
    const id = run.run_id;
    try {
      if (a === "toggle-hidden") {
        const hidden = !this.isHidden(run);
        this.state.update((st) => ({ hidden: { ...st.hidden, [id]: hidden } }));
        await api.patchRun(entity, project, id, { hidden });
      } else if (a === "color") {
        this.state.update((st) => ({ colors: { ...st.colors, [id]: arg } }));
        await api.patchRun(entity, project, id, { color: arg });
      } else if (a === "rename") {
        this.renderTable();
        await api.patchRun(entity, project, id, { name: arg });
      } else if (a === "delete") {
        const ok = await confirmDialog(`Delete run "${run.name}" (${id})? Its data is removed from every view.`, { ok: "Delete", danger: true });
        if (!ok) return;
        await api.deleteRun(entity, project, id);
        this.page = { runs: this.page.runs.filter((r) => r.run_id !== id), total: Math.max(0, this.page.total - 1) };
        this.renderTable();
        this.renderCounts();
        toast(`Deleted ${run.name}`);
      } else if (a === "stop") {
        await api.stopRun(entity, project, id, signedInUser());   // "": the server's caller
        toast(`Stop requested for ${run.name}`);
      }
    } catch (e) {
      toast(`${a} failed: ${e.message}`, "error");
    }
    this.later(() => this.refreshAll(), REFRESH_AFTER_CHANGE_MS);
  }
}
