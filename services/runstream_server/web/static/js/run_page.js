// The run page: #/r/<entity>/<project>/<run_id>[/overview|/charts|/system].
//
//   mount(root, {entity, project, runId, tab}) → {unmount(), update(params)}
// Overview: the run's fields (editable: name, notes, tags, privacy), metadata read from
// metadata_json (RunMetadata of events.proto: hostname, os, python_version,
// python_executable, args, program, cwd, cpu_count, memory_bytes, gpus, gpu_info,
// client_version, username, git_*), artifacts (placeholder), config as a searchable
// tree ("a/b" keys unflattened), summary as a table. Charts: every numeric key but
// system/*. System: the system/* keys.
//
// Test hooks: tab-overview, tab-charts, tab-system; ov-<field> for name, notes, privacy,
// tags, user, state, start, duration, hostname, os, python, executable, command,
// hardware, client_version (and run_id, git, artifacts); name-edit, name-input,
// notes-edit, notes-input, notes-save, privacy-toggle, tag-input, tag-remove-<tag>,
// config-search, config-tree, summary-search, summary-table.

import * as api from "./api.js";
import { h, clear, throttle, toast } from "./dom.js";
import { runColor } from "./colors.js";
import { formatTime, formatDurationUs, runDurationUs, formatBytes, formatNumber, displayJson, parseJson } from "./format.js";
import { stateBadge, runUser } from "./runs_table.js";
import { ChartPanels } from "./panels.js";
import { openLive } from "./live.js";

const TABS = [["overview", "Overview"], ["charts", "Charts"], ["system", "System"]];

export function mount(root, params) {
  const page = new RunPage(root, params);
  page.start();
  return { unmount: () => page.stop(), update: (p) => page.setTab(p.tab) };
}

class RunPage {
  constructor(root, { entity, project, runId, tab }) {
    this.root = root;
    this.entity = entity;
    this.project = project;
    this.runId = runId;
    this.tab = tab || "overview";
    this.run = null;
    this.keys = null;
    this.panels = null;
    // Chart settings per tab; system metrics are sampled in time, so they start on it.
    this.views = { charts: { xKind: "step", smoothing: 0 }, system: { xKind: "relative", smoothing: 0 } };
    this.stopped = false;
    this.onLiveSoon = throttle(() => this.reload(), 1000);
  }

  async start() {
    clear(this.root);
    this.root.append(h("div", { class: "loading", text: "Loading run…" }));
    try {
      this.run = await api.getRun(this.entity, this.project, this.runId);
    } catch (e) {
      if (this.stopped) return;
      clear(this.root);
      this.root.append(h("div", { class: "error", testid: "run-error", text: e.status === 404 ? `Run ${this.runId} not found.` : `Run not loaded: ${e.message}` }),
        h("a", { href: this.projectHref(), text: "Back to the project" }));
      return;
    }
    if (this.stopped) return;
    this.build();
    this.live = openLive(this.entity, this.project, ({ runs, deleted }) => {
      if (runs.some((r) => r.run_id === this.runId) || deleted.includes(this.runId)) this.onLiveSoon();
    }, { onReconnect: () => this.onLiveSoon() });
  }

  stop() {
    this.stopped = true;
    this.onLiveSoon.cancel();
    if (this.live) this.live.close();
    if (this.panels) this.panels.destroy();
  }

  projectHref() {
    return `#/p/${encodeURIComponent(this.entity)}/${encodeURIComponent(this.project)}`;
  }

  tabHref(tab) {
    return `#/r/${encodeURIComponent(this.entity)}/${encodeURIComponent(this.project)}/${encodeURIComponent(this.runId)}/${tab}`;
  }

  async reload() {
    if (this.stopped) return;
    try {
      this.run = await api.getRun(this.entity, this.project, this.runId);
    } catch (e) {
      toast(`Run not reloaded: ${e.message}`, "error");
      return;
    }
    if (this.stopped) return;
    this.renderHeader();
    if (this.tab === "overview") this.renderOverview();
    else if (this.panels) { this.keys = null; this.loadKeys(); this.panels.reload(); }
  }

  build() {
    clear(this.root);
    this.headerEl = h("div", { class: "run-head" });
    this.tabsEl = h("nav", { class: "tabs" });
    this.bodyEl = h("div", { class: "run-body" });
    this.root.append(h("div", { class: "run-page", testid: "run-page" }, this.headerEl, this.tabsEl, this.bodyEl));
    this.renderHeader();
    this.setTab(this.tab, true);
  }

  renderHeader() {
    const r = this.run;
    clear(this.headerEl);
    this.headerEl.append(
      h("div", { class: "crumbs" }, h("a", { href: "#/", text: "Projects" }), " / ",
        h("a", { href: this.projectHref(), text: `${this.entity}/${this.project}`, testid: "run-project-link" }), " / "),
      h("h2", {}, h("span", { class: "swatch big", style: { background: runColor(null, r) } }),
        h("span", { text: r.name || r.run_id, testid: "run-title" }), " ", stateBadge(r)));
  }

  setTab(tab, force = false) {
    tab = TABS.some(([t]) => t === tab) ? tab : "overview";
    if (tab === this.tab && !force) return;
    this.tab = tab;
    clear(this.tabsEl);
    for (const [t, label] of TABS) {
      this.tabsEl.append(h("a", { class: `tab${t === tab ? " active" : ""}`, href: this.tabHref(t), text: label, testid: `tab-${t}`, attrs: { "aria-selected": String(t === tab) } }));
    }
    if (this.panels) { this.panels.destroy(); this.panels = null; }
    clear(this.bodyEl);
    if (tab === "overview") this.renderOverview();
    else this.renderCharts(tab === "system");
  }

  // --- overview ------------------------------------------------------------------------

  renderOverview() {
    const r = this.run;
    const md = parseJson(r.metadata_json || "") || {};
    const meta = typeof md === "object" ? md : {};
    clear(this.bodyEl);
    const rows = [
      ["name", "Name", this.nameField()],
      ["run_id", "Run ID", h("code", { text: r.run_id })],
      ["notes", "Description", this.notesField()],
      ["privacy", "Privacy", this.privacyField()],
      ["tags", "Tags", this.tagsField()],
      ["user", "Author", runUser(r) || "—"],
      ["state", "State", h("span", {}, stateBadge(r), r.state_cause ? h("span", { class: "muted", text: ` — ${r.state_cause}` }) : null,
        r.exit_code ? h("span", { class: "muted", text: ` (exit code ${r.exit_code})` }) : null)],
      ["start", "Start time", formatTime(r.start_time_us) || "—"],
      ["duration", "Duration", (r.state === "running" ? "running for " : "") + (formatDurationUs(runDurationUs(r)) || "—")],
      ["hostname", "Hostname", meta.hostname || "—"],
      ["os", "OS", meta.os || "—"],
      ["python", "Python version", meta.python_version || "—"],
      ["executable", "Python executable", h("code", { text: meta.python_executable || "—" })],
      ["command", "Command", h("code", { text: commandLine(meta) || "—" })],
      ["cwd", "Working directory", h("code", { text: meta.cwd || "—" })],
      ["hardware", "System hardware", hardware(meta) || "—"],
      ["git", "Git", gitText(meta) || "—"],
      ["client_version", "Client version", meta.client_version || "—"],
    ];
    if (r.group) rows.push(["group", "Group", r.group]);
    if (r.job_type) rows.push(["job_type", "Job type", r.job_type]);
    const table = h("table", { class: "kv overview" }, h("tbody", {}, rows.map(([id, label, value]) =>
      h("tr", {}, h("th", { text: label }), h("td", { testid: `ov-${id}` }, value)))));
    this.bodyEl.append(
      h("section", { class: "card" }, h("h3", { text: "Overview" }), table),
      h("section", { class: "card", testid: "ov-artifacts" }, h("h3", { text: "Artifact outputs" }),
        h("p", { class: "muted", text: "No artifacts yet." })),
      h("section", { class: "card" }, h("h3", { text: "Config" }), this.configTree(r.config || {})),
      h("section", { class: "card" }, h("h3", { text: "Summary" }), this.summaryTable(r)));
  }

  patch(fields, what) {
    return api.patchRun(this.entity, this.project, this.runId, fields)
      .then(() => { Object.assign(this.run, fields); toast(`${what} saved`); setTimeout(() => this.reload(), 1200); })
      .catch((e) => toast(`${what} not saved: ${e.message}`, "error"));
  }

  nameField() {
    const wrap = h("span", {});
    const show = () => {
      clear(wrap);
      wrap.append(h("span", { text: this.run.name || this.run.run_id }),
        h("button", { class: "btn small link", text: "rename", testid: "name-edit", on: { click: edit } }));
    };
    const edit = () => {
      clear(wrap);
      const input = h("input", { type: "text", value: this.run.name || "", testid: "name-input", maxLength: 128 });
      const save = () => {
        const v = input.value.trim();
        if (v && v !== this.run.name) this.patch({ name: v }, "Name").then(() => { this.renderHeader(); show(); });
        else show();
      };
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") save(); if (e.key === "Escape") show(); });
      wrap.append(input, h("button", { class: "btn small primary", text: "Save", testid: "name-save", on: { click: save } }));
      input.focus();
    };
    show();
    return wrap;
  }

  notesField() {
    const wrap = h("div", { class: "notes-field" });
    const show = () => {
      clear(wrap);
      const notes = this.run.notes || "";
      wrap.append(h("div", { class: notes ? "notes-text" : "notes-text muted", text: notes || "No description yet." }),
        h("button", { class: "btn small link", text: "edit", testid: "notes-edit", on: { click: edit } }));
    };
    const edit = () => {
      clear(wrap);
      const area = h("textarea", { value: this.run.notes || "", rows: 4, testid: "notes-input", placeholder: "Describe this run…" });
      const save = () => this.patch({ notes: area.value }, "Description").then(show);
      wrap.append(area, h("div", { class: "row-buttons" },
        h("button", { class: "btn small primary", text: "Save", testid: "notes-save", on: { click: save } }),
        h("button", { class: "btn small", text: "Cancel", testid: "notes-cancel", on: { click: show } })));
      area.focus();
    };
    show();
    return wrap;
  }

  privacyField() {
    const priv = this.run.privacy === "public" ? "public" : "private";
    const other = priv === "public" ? "private" : "public";
    const desc = priv === "public" ? "Public — anyone can view" : "Private — only the owner sees and contributes";
    return h("span", {}, h("span", { class: `privacy ${priv}`, text: desc }),
      h("button", {
        class: "btn small link", text: `make ${other}`, testid: "privacy-toggle",
        on: { click: () => this.patch({ privacy: other }, "Privacy").then(() => this.renderOverview()) },
      }));
  }

  tagsField() {
    const tags = [...(this.run.tags || [])];
    const save = (next) => this.patch({ tags: next }, "Tags").then(() => this.renderOverview());
    const input = h("input", { type: "text", placeholder: "add tag…", testid: "tag-input", class: "tag-input", maxLength: 64 });
    input.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      const t = input.value.trim();
      if (t && !tags.includes(t)) save([...tags, t]);
    });
    return h("span", { class: "tags" },
      tags.map((t) => h("span", { class: "tag" }, t,
        h("button", { class: "chip-x", text: "×", title: `remove ${t}`, testid: `tag-remove-${t}`, on: { click: () => save(tags.filter((x) => x !== t)) } }))),
      input);
  }

  configTree(config) {
    const tree = unflatten(config);
    const search = h("input", { type: "search", placeholder: "Search config…", testid: "config-search", class: "search small" });
    const host = h("div", { class: "config-tree", testid: "config-tree" });
    const render = () => {
      clear(host);
      const q = search.value.trim().toLowerCase();
      const node = renderTree(tree, "", q);
      host.append(node || h("p", { class: "muted", text: Object.keys(config).length ? "No key matches." : "No config." }));
    };
    search.addEventListener("input", render);
    render();
    return h("div", {}, search, host);
  }

  summaryTable(run) {
    const entries = [
      ...Object.entries(run.summary || {}).map(([k, v]) => [k, formatNumber(v)]),
      ...Object.entries(run.summary_other || {}).map(([k, v]) => [k, displayJson(v)]),
    ].sort((a, b) => a[0].localeCompare(b[0]));
    const search = h("input", { type: "search", placeholder: "Search summary…", testid: "summary-search", class: "search small" });
    const body = h("tbody", {});
    const render = () => {
      clear(body);
      const q = search.value.trim().toLowerCase();
      const shown = entries.filter(([k]) => !q || k.toLowerCase().includes(q));
      for (const [k, v] of shown) body.append(h("tr", {}, h("th", { text: k }), h("td", { class: "num", text: v })));
      if (!shown.length) body.append(h("tr", {}, h("td", { class: "muted", text: entries.length ? "No key matches." : "No summary yet." })));
    };
    search.addEventListener("input", render);
    render();
    return h("div", {}, search, h("table", { class: "kv", testid: "summary-table" }, body));
  }

  // --- charts / system tabs --------------------------------------------------------------

  renderCharts(system) {
    const view = this.views[system ? "system" : "charts"];
    const xSel = h("select", { testid: "x-axis" },
      h("option", { value: "step", text: "Step" }), h("option", { value: "wall", text: "Wall time" }),
      h("option", { value: "relative", text: "Relative time" }));
    xSel.value = view.xKind;
    const smooth = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(view.smoothing), testid: "smoothing" });
    const chartsHost = h("div", {});
    this.bodyEl.append(h("div", { class: "ws-toolbar" },
      h("label", { class: "inline" }, "X ", xSel), h("label", { class: "inline" }, "Smoothing ", smooth)), chartsHost);
    this.panels = new ChartPanels(chartsHost, {
      load: (key, opts) => this.loadLine(key, opts),
      view,
      emptyText: system ? "No system metrics recorded for this run." : "No metrics logged yet.",
    });
    xSel.addEventListener("change", () => { view.xKind = xSel.value; this.panels.setView({ xKind: xSel.value }); });
    smooth.addEventListener("change", () => { view.smoothing = Number(smooth.value); this.panels.setView({ smoothing: view.smoothing }); });
    this.system = system;
    this.loadKeys();
  }

  async loadKeys() {
    try {
      if (!this.keys) this.keys = await api.runKeys(this.entity, this.project, this.runId);
    } catch (e) {
      toast(`Metric keys not loaded: ${e.message}`, "error");
      return;
    }
    if (!this.panels || this.stopped) return;
    const numeric = this.keys.numeric || [];
    this.panels.setKeys(numeric.filter((k) => k.startsWith("system/") === this.system));
  }

  async loadLine(key, { buckets, minStep, maxStep, signal }) {
    const ans = await api.runHistory(this.entity, this.project, this.runId, { keys: [key], buckets, minStep, maxStep, signal });
    const r = this.run;
    return (ans.series || []).map((sr) => ({
      id: r.run_id, kind: "run", label: r.name || r.run_id, color: runColor(null, r),
      step: sr.step || [], value: sr.value || [], time_us: sr.time_us || [], start_us: r.start_time_us || null,
      lo: sr.downsampled ? sr.min : null, hi: sr.downsampled ? sr.max : null,
    }));
  }
}

// --- helpers ---------------------------------------------------------------------------

// The command line: args (argv) joined with shell quoting, else the program.
export function commandLine(meta) {
  const args = Array.isArray(meta.args) ? meta.args : [];
  if (!args.length) return meta.program || "";
  const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${String(a).replace(/'/g, "'\\''")}'`);
  const exe = meta.python_executable ? `${meta.python_executable} ` : "";
  return exe + args.map(quote).join(" ");
}

export function hardware(meta) {
  const parts = [];
  if (meta.cpu_count) parts.push(`${meta.cpu_count} CPU${meta.cpu_count === 1 ? "" : "s"}`);
  const mem = formatBytes(meta.memory_bytes);
  if (mem) parts.push(`${mem} memory`);
  const gpus = Array.isArray(meta.gpu_info) && meta.gpu_info.length
    ? meta.gpu_info.map((g) => (g.memory_bytes ? `${g.name} (${formatBytes(g.memory_bytes)})` : g.name))
    : Array.isArray(meta.gpus) ? meta.gpus : [];
  parts.push(gpus.length ? `${gpus.length} GPU${gpus.length === 1 ? "" : "s"}: ${gpus.join(", ")}` : "no GPU");
  return parts.join(" · ");
}

function gitText(meta) {
  if (!meta.git_commit) return "";
  const parts = [meta.git_commit.slice(0, 12)];
  if (meta.git_branch) parts.push(`on ${meta.git_branch}`);
  if (meta.git_dirty) parts.push("(modified)");
  if (meta.git_remote) parts.push(`— ${meta.git_remote}`);
  return parts.join(" ");
}

// {"a/b": v, "a/c": w, "d": x} → nested Map tree: {children: Map, value?, path}.
export function unflatten(config) {
  const root = { children: new Map(), path: "" };
  for (const key of Object.keys(config).sort()) {
    let node = root;
    const parts = key.split("/");
    parts.forEach((part, i) => {
      if (!node.children.has(part)) node.children.set(part, { children: new Map(), path: parts.slice(0, i + 1).join("/") });
      node = node.children.get(part);
    });
    node.value = parseJson(config[key]);
    node.hasValue = true;
  }
  return root;
}

// A <ul> of the tree, keeping only nodes whose path or value matches q (and their
// ancestors); null when nothing matches.
function renderTree(node, _prefix, q) {
  const items = [];
  for (const [name, child] of node.children) {
    const sub = child.children.size ? renderTree(child, child.path, q) : null;
    const valueText = child.hasValue ? valueString(child.value) : "";
    const selfMatch = !q || child.path.toLowerCase().includes(q) || valueText.toLowerCase().includes(q);
    if (!selfMatch && !sub) continue;
    const li = h("li", { dataset: { path: child.path } });
    if (child.children.size) {
      const kids = q && !selfMatch ? sub : renderTree(child, child.path, "");
      li.append(h("details", { open: true }, h("summary", { class: "key", text: name }),
        child.hasValue ? h("span", { class: "val", text: valueText }) : null, kids));
    } else {
      li.append(h("span", { class: "key", text: name }), h("span", { class: "val", text: valueText, title: child.path }));
    }
    items.push(li);
  }
  return items.length ? h("ul", {}, items) : null;
}

function valueString(v) {
  if (v && typeof v === "object") return JSON.stringify(v);
  return v === null ? "null" : typeof v === "number" ? formatNumber(v) : String(v);
}
