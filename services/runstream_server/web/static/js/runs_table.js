// The runs table (the workspace sidebar, or the whole page when expanded).
//
//   const table = new RunsTable(host, handlers);  table.render(view);
//   view: {runs, total, offset, pageSize, columns (["config.<k>", "summary.<k>"]), sort
//          {key, desc}, isHidden(run), colorOf(run), visualized (Set of run ids),
//          runHref(run)}
//   handlers: onSort(key), onPage(offset), onPageSize(n), onRemoveColumn(col),
//             onAction(action, run, arg) with action one of
//             "rename" (arg: new name), "delete", "stop", "toggle-hidden", "color" (arg: "#rrggbb" or "")
//
// Rows are data-testid="run-row-<run_id>" with cells run-name, run-state (the cause in
// its title), run-eye (hide/show), run-color (colour swatch) and the menu button
// run-menu-<run_id> (items menu-rename, menu-delete, menu-stop — running runs only —,
// menu-hide, menu-color). The rename input is rename-input; the colour popover has
// color-preset-<i>, color-custom (<input type=color>) and color-reset. Sortable headers
// are col-<sort key>; paging: page-prev, page-next, page-info, page-size.

import { h, clear, popover, closePopovers } from "./dom.js";
import { PALETTE, longHex } from "./colors.js";
import { formatTime, formatDurationUs, runDurationUs, formatNumber, displayJson, parseJson } from "./format.js";

// Base columns: id (also the sort key when sortable), header label, cell renderer.
// The first (state) comes right after the name; chosen columns follow it.
const BASE_COLUMNS = [
  { id: "state", label: "State", sort: "state", cell: stateCell },
  { id: "created_at", label: "Created", sort: "created_at", cell: (r) => text(formatTime(r.start_time_us), "nowrap") },
  { id: "duration", label: "Duration", sort: "duration", cell: (r) => text(formatDurationUs(runDurationUs(r)), "num") },
  { id: "user", label: "User", sort: "user", cell: (r) => text(runUser(r)) },
  { id: "tags", label: "Tags", sort: null, cell: tagsCell },
  { id: "notes", label: "Notes", sort: null, cell: (r) => h("td", { class: "notes", text: r.notes || "", title: r.notes || "" }) },
];

export function runUser(run) {
  if (run.user) return run.user;
  const md = parseJson(run.metadata_json || "");
  return (md && typeof md === "object" && md.username) || "";
}

function text(t, cls = "") {
  return h("td", { class: cls, text: t ?? "" });
}

export function stateBadge(run) {
  return h("span", { class: `state state-${run.state}`, text: run.state || "", title: run.state_cause || run.state || "" });
}

function stateCell(run) {
  return h("td", { testid: "run-state", title: run.state_cause || "" }, stateBadge(run));
}

function tagsCell(run) {
  return h("td", { class: "tags" }, (run.tags || []).map((t) => h("span", { class: "tag", text: t })));
}

// An extra column's value for a run, as text.
export function columnValue(run, col) {
  if (col.startsWith("config.")) {
    const k = col.slice(7);
    return k in (run.config || {}) ? displayJson(run.config[k]) : "";
  }
  if (col.startsWith("summary.")) {
    const k = col.slice(8);
    if (run.summary && k in run.summary) return formatNumber(run.summary[k]);
    if (run.summary_other && k in run.summary_other) return displayJson(run.summary_other[k]);
  }
  return "";
}

export class RunsTable {
  constructor(host, handlers) {
    this.host = host;
    this.handlers = handlers;
    this.editing = null;     // run id being renamed: renders wait until it ends
    this.pending = null;
    host.classList.add("runs-table-host");
  }

  render(view) {
    if (this.editing) { this.pending = view; return; }
    this.view = view;
    const { runs, columns } = view;
    const scroll = this.host.querySelector(".table-scroll");
    const keepScroll = scroll ? [scroll.scrollLeft, scroll.scrollTop] : null;
    clear(this.host);

    // Name, state, the chosen columns (visible in the narrow sidebar), then the rest.
    const head = h("tr", {},
      this.header({ id: "name", label: "Name", sort: "name" }, "sticky"),
      this.header(BASE_COLUMNS[0]),
      columns.map((col) => this.header({ id: col, label: col.replace(/^(config|summary)\./, ""), sort: col, extra: col })),
      BASE_COLUMNS.slice(1).map((c) => this.header(c)));
    const body = h("tbody", {}, runs.map((r) => this.row(r)));
    if (!runs.length) {
      body.append(h("tr", {}, h("td", { class: "empty", attrs: { colspan: 2 + BASE_COLUMNS.length + columns.length }, text: "No runs match." })));
    }
    const table = h("table", { class: "runs-table", testid: "runs-table" }, h("thead", {}, head), body);
    const wrap = h("div", { class: "table-scroll" }, table);
    this.host.append(wrap, this.pager(view));
    if (keepScroll) { wrap.scrollLeft = keepScroll[0]; wrap.scrollTop = keepScroll[1]; }
  }

  header(col, extraClass = "") {
    const { sort } = this.view;
    const active = col.sort && sort.key === col.sort;
    const th = h("th", {
      class: `${col.sort ? "sortable" : ""} ${active ? "sorted" : ""} ${extraClass}`.trim(),
      testid: `col-${col.sort || col.id}`,
      title: col.extra ? `${col.extra} — click to sort` : col.sort ? "Click to sort" : "",
    }, h("span", { text: col.label }), active ? h("span", { class: "arrow", text: sort.desc ? " ↓" : " ↑" }) : null);
    if (col.sort) th.addEventListener("click", (e) => { if (!e.target.closest(".col-x")) this.handlers.onSort(col.sort); });
    if (col.extra) {
      th.append(h("button", {
        class: "col-x", text: "×", title: "Remove column", testid: `col-remove-${col.extra}`,
        on: { click: () => this.handlers.onRemoveColumn(col.extra) },
      }));
    }
    return th;
  }

  row(run) {
    const { isHidden, colorOf, visualized, columns, runHref } = this.view;
    const hidden = isHidden(run);
    const color = colorOf(run);
    const act = (a, arg) => this.handlers.onAction(a, run, arg);
    const eye = h("button", {
      class: `icon eye${hidden ? " off" : ""}`, testid: "run-eye",
      title: hidden ? "Hidden from charts — click to show" : "Shown in charts — click to hide",
      attrs: { "aria-pressed": String(!hidden), "aria-label": hidden ? "show run" : "hide run" },
      on: { click: () => act("toggle-hidden") },
    }, eyeIcon(hidden));
    const swatch = h("button", {
      class: "icon swatch-btn", testid: "run-color", title: "Colour",
      style: { background: color }, dataset: { color },
      on: { click: (e) => this.openColor(e.currentTarget, run) },
    });
    const menuBtn = h("button", {
      class: "icon menu-btn", text: "⋮", testid: `run-menu-${run.run_id}`, title: "Run actions",
      on: { click: (e) => this.openMenu(e.currentTarget, run) },
    });
    const nameLink = h("a", { href: runHref(run), class: "run-link", text: run.name || run.run_id, testid: "run-name", title: `${run.name} (${run.run_id})` });
    const nameCell = h("td", { class: "name-cell sticky" },
      h("div", { class: "name-inner" }, eye, swatch, nameLink, menuBtn));
    const cls = ["run-row", hidden ? "hidden-run" : "", visualized.has(run.run_id) ? "visualized" : ""].join(" ").trim();
    return h("tr", { class: cls, testid: `run-row-${run.run_id}`, dataset: { runId: run.run_id } },
      nameCell,
      BASE_COLUMNS[0].cell(run),
      columns.map((col) => h("td", { class: "num", text: columnValue(run, col), testid: `cell-${col}` })),
      BASE_COLUMNS.slice(1).map((c) => c.cell(run)));
  }

  openMenu(anchor, run) {
    const hidden = this.view.isHidden(run);
    const item = (label, testid, fn, cls = "") => h("button", {
      class: `menu-item ${cls}`, text: label, testid,
      on: { click: () => { pop.close(); fn(); } },
    });
    const act = (a, arg) => this.handlers.onAction(a, run, arg);
    const items = [
      item("Rename", "menu-rename", () => this.startRename(run)),
      item(hidden ? "Show in charts" : "Hide from charts", "menu-hide", () => act("toggle-hidden")),
      item("Colour…", "menu-color", () => {
        const row = this.host.querySelector(`[data-testid="run-row-${CSS.escape(run.run_id)}"]`);
        const sw = row ? row.querySelector('[data-testid="run-color"]') : anchor;
        this.openColor(sw || anchor, run);
      }),
      run.state === "running" ? item("Stop run", "menu-stop", () => act("stop")) : null,
      item("Delete", "menu-delete", () => act("delete"), "danger"),
    ];
    const pop = popover(anchor, h("div", { class: "menu", attrs: { role: "menu" } }, items), { testid: "run-menu" });
  }

  openColor(anchor, run) {
    const current = this.view.colorOf(run);
    const pick = (c) => { pop.close(); this.handlers.onAction("color", run, c); };
    const custom = h("input", { type: "color", value: longHex(current), testid: "color-custom", title: "Custom colour" });
    custom.addEventListener("change", () => pick(custom.value));
    const content = h("div", { class: "color-picker" },
      h("div", { class: "palette" }, PALETTE.map((c, i) => h("button", {
        class: `swatch-btn${c === current ? " current" : ""}`, style: { background: c }, title: c,
        testid: `color-preset-${i}`, dataset: { color: c }, on: { click: () => pick(c) },
      }))),
      h("div", { class: "color-row" }, h("label", {}, "Custom ", custom),
        h("button", { class: "btn small link", text: "Default", testid: "color-reset", on: { click: () => pick("") } })));
    const pop = popover(anchor, content, { testid: "color-picker" });
  }

  startRename(run) {
    closePopovers();
    const row = this.host.querySelector(`[data-testid="run-row-${CSS.escape(run.run_id)}"]`);
    const link = row && row.querySelector('[data-testid="run-name"]');
    if (!link) return;
    this.editing = run.run_id;
    const input = h("input", { type: "text", value: run.name || "", class: "rename-input", testid: "rename-input", maxLength: 128 });
    let done = false;
    const finish = (commit) => {
      if (done) return;
      done = true;
      const name = input.value.trim();
      this.editing = null;
      if (commit && name && name !== run.name) {
        run.name = name;   // show it at once; the PATCH lands within about a second
        this.handlers.onAction("rename", run, name);
      }
      const view = this.pending || this.view;
      this.pending = null;
      this.render(view);
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); finish(true); }
      if (e.key === "Escape") { e.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
    link.replaceWith(input);
    input.focus();
    input.select();
  }

  pager({ total, offset, pageSize, runs }) {
    const from = total ? offset + 1 : 0;
    const to = offset + runs.length;
    const size = h("select", { testid: "page-size", title: "Runs per page" },
      [50, 100, 200].map((n) => h("option", { value: String(n), text: `${n} / page`, selected: n === pageSize })));
    size.addEventListener("change", () => this.handlers.onPageSize(Number(size.value)));
    return h("div", { class: "pager" },
      h("button", { class: "btn small", text: "‹ Prev", testid: "page-prev", disabled: offset <= 0, on: { click: () => this.handlers.onPage(Math.max(0, offset - pageSize)) } }),
      h("span", { class: "page-info", testid: "page-info", text: `${from}–${to} of ${total}` }),
      h("button", { class: "btn small", text: "Next ›", testid: "page-next", disabled: to >= total, on: { click: () => this.handlers.onPage(offset + pageSize) } }),
      size);
  }
}

function eyeIcon(off) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.innerHTML = off
    ? '<path d="M3 3l18 18M10.6 5.1A10.9 10.9 0 0 1 12 5c5 0 9 4.5 10 7-.4 1-1.3 2.4-2.6 3.7M6.1 6.1C4 7.5 2.6 9.6 2 12c1 2.5 5 7 10 7 1.9 0 3.6-.6 5-1.5M9.9 9.9a3 3 0 0 0 4.2 4.2" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>'
    : '<path d="M2 12c1-2.5 5-7 10-7s9 4.5 10 7c-1 2.5-5 7-10 7S3 14.5 2 12z" fill="none" stroke="currentColor" stroke-width="2"/><circle cx="12" cy="12" r="3" fill="currentColor"/>';
  return svg;
}
