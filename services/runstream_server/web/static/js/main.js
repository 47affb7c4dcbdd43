// Runstream web UI — entry point and hash router. Plain ES modules, no build step.
//
// Routes (location.hash):
//   #/                                   projects page        (projects.js)
//   #/p/<entity>/<project>               project workspace    (workspace.js)
//   #/r/<entity>/<project>/<run_id>[/overview|/charts|/system]   run page (run_page.js)
// Each page module exports mount(root, params) → {unmount(), update?(params)}; update
// is called instead of a remount when only the run page's tab changes.
//
// Modules: api.js (fetch wrappers), state.js (workspace state load/save, user name),
// filters.js, runs_table.js, column_chooser.js, panels.js (chart sections), charts.js
// (SVG line chart), live.js (SSE), colors.js, format.js, dom.js. See docs/web.md.
//
// Stable test hooks (data-testid):
//   header:     user-name (the user whose workspace state is used)
//   projects:   project-search, projects-list, project-<name>
//   workspace:  run-search, run-search-regex, search-error, run-total, run-visualized,
//               visualized-count, group-by, band-kind, x-axis, smoothing,
//               column-chooser (→ column-search, column-option-<config.k|summary.k>),
//               table-expand, filter-add (→ filter-kind, filter-key, filter-value,
//               filter-lo, filter-hi, filter-apply), filter-chip-<i>, filter-remove-<i>
//   runs table: runs-table, run-row-<run_id> (cells run-name, run-state [title = cause],
//               run-eye, run-color, cell-<column>), run-menu-<run_id> (→ menu-rename,
//               menu-delete, menu-stop, menu-hide, menu-color), rename-input,
//               color-preset-<i>, color-custom, color-reset, col-<sort key>,
//               col-remove-<column>, page-prev, page-next, page-info, page-size,
//               confirm-dialog, confirm-ok, confirm-cancel
//   charts:     section-<prefix>, section-toggle-<prefix>, chart-<metric key>
//               (inside: <path data-run=<run_id>> or <path data-group=<group>> per line,
//               band-<group> for a group's shaded band, data-minmax=<run_id> for a
//               downsampled run's min/max band, legend-<id>), chart-reset-<metric key>
//   run page:   run-title, tab-overview, tab-charts, tab-system, ov-<field> for name,
//               run_id, notes, privacy, tags, user, state, start, duration, hostname,
//               os, python, executable, command, cwd, hardware, git, client_version,
//               ov-artifacts; name-edit, name-input, notes-edit, notes-input,
//               notes-save, privacy-toggle, tag-input, tag-remove-<tag>,
//               config-search, config-tree, summary-search, summary-table
//   misc:       toast
// Group ids (data-group, band-<group>) are the group's value as displayed: strings
// without JSON quotes (cnn, not "cnn"), other values as JSON text.

import { h, clear, closePopovers } from "./dom.js";
import { currentUser, setCurrentUser } from "./state.js";
import * as projects from "./projects.js";
import * as workspace from "./workspace.js";
import * as runPage from "./run_page.js";

const ROUTES = [
  { re: /^#?\/?$/, page: projects, params: () => ({}) },
  { re: /^#\/p\/([^/]+)\/([^/]+)\/?$/, page: workspace, params: (m) => ({ entity: m[1], project: m[2] }) },
  {
    re: /^#\/r\/([^/]+)\/([^/]+)\/([^/]+)(?:\/(overview|charts|system))?\/?$/,
    page: runPage,
    params: (m) => ({ entity: m[1], project: m[2], runId: m[3], tab: m[4] || "overview" }),
  },
];

let current = null;   // {route, key, handle}

function decode(m) {
  return m.map((part) => (part === undefined ? part : decodeURIComponent(part)));
}

export function route() {
  const root = document.getElementById("app");
  const hash = location.hash || "#/";
  closePopovers();
  for (const r of ROUTES) {
    const m = hash.match(r.re);
    if (!m) continue;
    const params = r.params(decode(m));
    const key = JSON.stringify({ ...params, tab: undefined });
    if (current && current.route === r && current.key === key && current.handle.update) {
      current.handle.update(params);
      return;
    }
    if (current) current.handle.unmount();
    current = { route: r, key, handle: r.page.mount(root, params) };
    return;
  }
  if (current) current.handle.unmount();
  current = null;
  clear(root);
  root.append(h("div", { class: "error", text: `No page at ${hash}.` }), h("a", { href: "#/", text: "Projects" }));
}

function remount() {
  if (current) current.handle.unmount();
  current = null;
  route();
}

function header() {
  const user = h("input", { type: "text", value: currentUser(), testid: "user-name", class: "user-input", title: "Your user name: workspace layouts are saved per user", size: 12 });
  user.addEventListener("change", () => {
    setCurrentUser(user.value || "default");
    user.value = currentUser();
    remount();
  });
  const bar = document.getElementById("topbar");
  clear(bar);
  bar.append(h("a", { href: "#/", class: "brand", text: "Runstream" }),
    h("span", { class: "spacer" }),
    h("label", { class: "inline user" }, "user ", user));
}

header();
window.addEventListener("hashchange", route);
route();
