// Workspace state: what a user arranged in a project's workspace, kept on the server per
// project and user (GET/PUT /api/v1/projects/{e}/{p}/workspace?user=<u>).
//
// Contract: WorkspaceState.get() returns the current state (treat it as read-only);
// update(patch) merges a patch (an object, or a function state → patch), tells the
// subscribers which keys changed, and saves ~500 ms after the last change. load() reads
// the saved state; unknown or mistyped saved fields fall back to the defaults.
//
// hidden / colors mirror what is also PATCHed into the run (so the API shows it); the
// workspace copy wins over the run's own fields while both exist, which keeps the page
// steady during the ~1 s before a PATCH shows in reads.

import { getWorkspace, putWorkspace } from "./api.js";
import { debounce } from "./dom.js";

// The user whose workspace state is used. It is the signed-in user (setIdentity, from
// GET /api/v1/whoami or the sign-in); an admin, whom the server lets save anyone's
// workspace, may pick another user's in the header (stored in localStorage under
// USER_KEY; empty = their own). Before the identity is known: the stored name, else
// "default".
export const USER_KEY = "runstream.user";

let identity = null;   // {user, admin, teams, key_id} of the signed-in key, or null

// who: the answer of whoami / login, or null (signed out).
export function setIdentity(who) {
  identity = who && who.user ? who : null;
}

// The signed-in identity {user, admin, teams, key_id}, or null.
export function signedIn() {
  return identity;
}

// The signed-in user's name, "" when not signed in.
export function signedInUser() {
  return identity ? identity.user : "";
}

function storedUser() {
  try {
    return (localStorage.getItem(USER_KEY) || "").trim();
  } catch {
    return "";
  }
}

// The user whose workspace is loaded and saved (see above).
export function currentUser() {
  if (identity && !identity.admin) return identity.user;
  return storedUser() || signedInUser() || "default";
}

// Pick whose workspace is used (admins); "" or one's own name goes back to one's own.
export function setCurrentUser(name) {
  const n = (name || "").trim();
  if (!n || n === signedInUser()) localStorage.removeItem(USER_KEY);
  else localStorage.setItem(USER_KEY, n);
}

export const DEFAULT_STATE = Object.freeze({
  version: 1,
  hidden: {},          // run_id → bool (eye toggle; also PATCHed)
  colors: {},          // run_id → "#rrggbb" (also PATCHed)
  sort: { key: "created_at", desc: true },   // key: created_at|name|state|duration|user|config.<k>|summary.<k>
  groupBy: "",         // "" or "config.<key>"
  band: "std",         // "std" | "minmax": the shaded band of grouped charts
  filters: [],         // see filters.js
  search: "",          // run name search
  regex: false,        // search is a regular expression (name_regex)
  visualized: 10,      // how many runs the charts draw (the first N non-hidden in sort order)
  columns: [],         // extra table columns: "config.<k>" / "summary.<k>"
  xAxis: "step",       // "step" | "wall" | "relative"
  smoothing: 0,        // EMA weight 0..0.99
  pageSize: 50,
  expanded: false,     // the runs table fills the page
  collapsed: [],       // chart sections folded away
});

const TYPES = {
  hidden: "object", colors: "object", sort: "object", groupBy: "string", band: "string",
  filters: "array", search: "string", regex: "boolean", visualized: "number",
  columns: "array", xAxis: "string", smoothing: "number", pageSize: "number",
  expanded: "boolean", collapsed: "array",
};

function typeOf(v) {
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  return typeof v;
}

// Saved state (any JSON) → a full, well-typed state.
export function normalize(saved) {
  const out = structuredClone(DEFAULT_STATE);
  if (!saved || typeof saved !== "object") return out;
  for (const [k, t] of Object.entries(TYPES)) {
    if (typeOf(saved[k]) === t) out[k] = saved[k];
  }
  if (typeof out.sort.key !== "string" || !out.sort.key) out.sort = { ...DEFAULT_STATE.sort };
  out.sort = { key: out.sort.key, desc: !!out.sort.desc };
  out.visualized = Math.max(0, Math.min(1000, Math.round(out.visualized)));
  out.smoothing = Math.max(0, Math.min(0.99, out.smoothing));
  if (![50, 100, 200].includes(out.pageSize)) out.pageSize = 50;
  if (!["step", "wall", "relative"].includes(out.xAxis)) out.xAxis = "step";
  if (!["std", "minmax"].includes(out.band)) out.band = "std";
  return out;
}

export class WorkspaceState {
  constructor(entity, project, user = currentUser()) {
    this.entity = entity;
    this.project = project;
    this.user = user;
    this.state = normalize(null);
    this.listeners = new Set();
    this.saveSoon = debounce(() => this.save(), 500);
    this.onSaveError = null;   // (error) => void
  }

  async load() {
    try {
      const answer = await getWorkspace(this.entity, this.project, this.user);
      this.state = normalize(answer && answer.state);
    } catch (e) {
      if (e.status !== 404) console.warn("workspace state not loaded:", e.message);
      this.state = normalize(null);
    }
    return this.state;
  }

  get() {
    return this.state;
  }

  // patch: {key: value} or (state) => {key: value}. Returns the changed keys.
  update(patch) {
    const p = typeof patch === "function" ? patch(this.state) : patch;
    const changed = [];
    const next = { ...this.state };
    for (const [k, v] of Object.entries(p || {})) {
      if (JSON.stringify(next[k]) !== JSON.stringify(v)) {
        next[k] = v;
        changed.push(k);
      }
    }
    if (!changed.length) return changed;
    this.state = next;
    this.saveSoon();
    for (const fn of this.listeners) fn(changed, this.state);
    return changed;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async save() {
    try {
      await putWorkspace(this.entity, this.project, this.user, this.state);
    } catch (e) {
      console.warn("workspace state not saved:", e.message);
      if (this.onSaveError) this.onSaveError(e);
    }
  }

  // Save a pending change now (leaving the page).
  flush() {
    this.saveSoon.flush();
  }
}
