// Runstream web UI — entry point and hash router. Plain ES modules, no build step.
//
// Routes (location.hash):
//   #/                                   projects page        (projects.js)
//   #/p/<entity>/<project>               project workspace    (workspace.js)
//   #/r/<entity>/<project>/<run_id>[/overview|/charts|/system]   run page (run_page.js)
// Each page module exports mount(root, params) → {unmount(), update?(params)}; update
// is called instead of a remount when only the run page's tab changes.
//
// Sign-in: every API call needs the key cookie (api.js). At start the page asks
// GET /api/v1/whoami; when that, or any later call, answers 401 the page is unmounted and
// the sign-in view (login.js) takes #app until a key is accepted, then the route the
// user was on is mounted again. Sign out (header) POSTs /api/v1/logout.
//
// Modules: api.js (fetch wrappers), state.js (workspace state load/save, user name),
// login.js (sign-in view), filters.js, runs_table.js, column_chooser.js, panels.js (chart sections), charts.js
// (SVG line chart), live.js (SSE), colors.js, format.js, dom.js. See docs/web.md.
//
// Stable test hooks (data-testid):
//   header:     signed-in-user, sign-out, user-name (admins only: whose workspace
//               state is used, empty = their own)
//   sign-in:    login-form, login-key, login-submit, login-error (role=alert)
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

import { logout, setUnauthenticatedHandler, whoami } from "./api.js";
import { h, clear, closePopovers, toast } from "./dom.js";
import { currentUser, setCurrentUser, setIdentity, signedIn } from "./state.js";
import * as login from "./login.js";
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
let signInView = null;   // the sign-in view's handle while it is shown

function decode(m) {
  return m.map((part) => (part === undefined ? part : decodeURIComponent(part)));
}

export function route() {
  const root = document.getElementById("app");
  const hash = location.hash || "#/";
  closePopovers();
  if (!signedIn()) {
    showSignIn();
    return;
  }
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

// --- sign-in -------------------------------------------------------------------------

// Unmount the page and show the sign-in view (once: repeated 401s of the old page's
// requests find it shown). The hash stays, so signing in comes back to the same route.
function showSignIn() {
  if (signInView) return;
  setIdentity(null);
  closePopovers();
  if (current) current.handle.unmount();
  current = null;
  header();
  signInView = login.mount(document.getElementById("app"), { onSignedIn });
}

// The key was accepted: show who is signed in and mount the current route again.
function onSignedIn(who) {
  if (signInView) signInView.unmount();
  signInView = null;
  setIdentity(who);
  header();
  remount();
}

// Unmount first (the workspace saves a pending change with the key still set), then
// clear the cookie. A 401 means the key was already no longer valid: signed out too.
async function signOut() {
  if (current) current.handle.unmount();
  current = null;
  try {
    await logout();
  } catch (e) {
    if (e.status !== 401) {
      toast(`Not signed out: ${e.message}`, "error");
      route();
      return;
    }
  }
  showSignIn();
}

// --- header ----------------------------------------------------------------------------

// Brand; when signed in: the user whose workspace is used (admins may pick anyone's),
// the signed-in user's name and Sign out.
function header() {
  const bar = document.getElementById("topbar");
  clear(bar);
  bar.append(h("a", { href: "#/", class: "brand", text: "Runstream" }), h("span", { class: "spacer" }));
  const who = signedIn();
  if (!who) return;
  if (who.admin) bar.append(workspaceUserInput(who));
  bar.append(
    h("span", { class: "user", title: who.admin ? "Signed in (admin)" : "Signed in" },
      "signed in as ", h("strong", { text: who.user, testid: "signed-in-user" })),
    h("button", { class: "btn small signout", text: "Sign out", testid: "sign-out", on: { click: signOut } }));
}

// An admin's choice of whose saved workspace layouts to use (empty: their own).
function workspaceUserInput(who) {
  const user = h("input", {
    type: "text", value: currentUser(), placeholder: who.user, testid: "user-name", class: "user-input", size: 12,
    title: "Whose workspace layouts to use: they are saved per user (empty: your own)",
  });
  user.addEventListener("change", () => {
    setCurrentUser(user.value);
    user.value = currentUser();
    remount();
  });
  return h("label", { class: "inline user" }, "workspace of ", user);
}

// --- start -----------------------------------------------------------------------------

// Ask whom the cookie signs in, then mount the route (or, on 401, the sign-in view).
async function start() {
  setUnauthenticatedHandler(() => showSignIn());
  header();
  try {
    setIdentity(await whoami());
  } catch (e) {
    if (e.status !== 401) {
      const root = document.getElementById("app");
      clear(root);
      root.append(h("div", { class: "error", text: `The signed-in user could not be read: ${e.message}` }),
        h("button", { class: "btn", text: "Retry", on: { click: start } }));
      return;
    }
  }
  header();
  window.addEventListener("hashchange", route);
  route();
}

start();
