// Fetch wrappers for the HTTP/JSON API (docs/api.md). Every function returns the
// decoded JSON answer or throws ApiError {status, code, message}. Times are µs since the
// epoch. Query parameters are [name, value] pairs (so a name may repeat: state=a&state=b)
// or an object; empty values ("", null, undefined) are dropped.
//
// Every /api/ route needs an API key: the page sends the HttpOnly cookie runstream_key
// that POST /api/v1/login sets (same-origin fetches carry it). A 401 answer also calls
// the handler of setUnauthenticatedHandler() (main.js: the sign-in view), unless the
// call passes quiet401 (sign-in calls handle their own 401).

export const HISTORY_MAX_RUNS = 200;   // per /history call (server limit)
export const HISTORY_MAX_KEYS = 50;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

const enc = encodeURIComponent;

let onUnauthenticated = null;   // (ApiError) => void

// fn(error) runs on every 401 answer (not for quiet401 calls); null removes it.
export function setUnauthenticatedHandler(fn) {
  onUnauthenticated = fn;
}

export function queryString(params) {
  const pairs = Array.isArray(params) ? params : Object.entries(params || {});
  const parts = [];
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) parts.push(`${enc(k)}=${enc(String(one))}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}

async function request(method, path, { query, body, signal, keepalive, quiet401 = false } = {}) {
  const init = { method, headers: {}, signal, keepalive, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path + queryString(query), init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "UNAVAILABLE", `cannot reach the server: ${e.message}`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    const error = new ApiError(resp.status, err.code, err.message || `${method} ${path}: HTTP ${resp.status}`);
    if (resp.status === 401 && !quiet401 && onUnauthenticated) onUnauthenticated(error);
    throw error;
  }
  return data;
}

const proj = (e, p) => `/api/v1/projects/${enc(e)}/${enc(p)}`;
const runPath = (e, p, id) => `/api/v1/runs/${enc(e)}/${enc(p)}/${enc(id)}`;

function chunks(list, n) {
  const out = [];
  for (let i = 0; i < list.length; i += n) out.push(list.slice(i, i + n));
  return out;
}

// --- sign-in -------------------------------------------------------------------------

// → {user, admin, teams, key_id}; a 401 (wrong key) does not call the 401 handler. The
// answer sets the cookie runstream_key (HttpOnly) that later calls send.
export const login = (key) => request("POST", "/api/v1/login", { body: { key }, quiet401: true });
// Clears the cookie. 401 when the cookie no longer holds a valid key.
export const logout = () => request("POST", "/api/v1/logout", { quiet401: true });
// → {user, admin, teams, key_id} of the cookie's key; 401 when not signed in.
export const whoami = () => request("GET", "/api/v1/whoami", { quiet401: true });

// --- projects ------------------------------------------------------------------------

// → {projects: [{entity, name, run_count, last_event_time_us}]}
export const listProjects = (q = "") => request("GET", "/api/v1/projects", { query: { q } });

// params: pairs from filters.filterParams() plus sort/desc/limit/offset/hidden.
// → {runs: [RunView], total}
export const listRuns = (e, p, params, opts) => request("GET", `${proj(e, p)}/runs`, { query: params, ...opts });

// → {config: [...], summary: [...], truncated}
export const listColumns = (e, p, prefix = "", limit = 100) =>
  request("GET", `${proj(e, p)}/columns`, { query: { prefix, limit } });

// → {keys: [...], truncated}: numeric history keys of the project.
export const listKeys = (e, p, prefix = "", limit = 1000) =>
  request("GET", `${proj(e, p)}/keys`, { query: { prefix, limit } });

// Series of several runs: split into calls of ≤200 runs and ≤50 keys, answers joined.
// → [{run_id, key, step[], value[], min[], max[], time_us[], total_points, downsampled}]
export async function projectHistory(e, p, { runs, keys, buckets, minStep, maxStep, signal }) {
  if (!runs.length || !keys.length) return [];
  const calls = [];
  for (const rs of chunks(runs, HISTORY_MAX_RUNS)) {
    for (const ks of chunks(keys, HISTORY_MAX_KEYS)) {
      calls.push(request("GET", `${proj(e, p)}/history`, {
        signal,
        // key=<k> (repeated) is taken whole: metric keys may hold commas.
        query: [["runs", rs.join(",")], ...ks.map((k) => ["key", k]),
          ["buckets", buckets], ["min_step", minStep], ["max_step", maxStep]],
      }));
    }
  }
  const answers = await Promise.all(calls);
  return answers.flatMap((a) => a.series || []);
}

// Group bands of one key. filterPairs: the same filter pairs as listRuns.
// → {groups: [{group (JSON text), count, step[], mean[], std[], min[], max[]}], buckets}
export const bands = (e, p, { key, groupBy, buckets, minStep, maxStep, filterPairs = [], signal }) =>
  request("GET", `${proj(e, p)}/bands`, {
    signal,
    query: [["key", key], ["group_by", groupBy], ["buckets", buckets],
      ["min_step", minStep], ["max_step", maxStep], ...filterPairs],
  });

// → {user, state, updated_us}
export const getWorkspace = (e, p, user) => request("GET", `${proj(e, p)}/workspace`, { query: { user } });
export const putWorkspace = (e, p, user, state) =>
  request("PUT", `${proj(e, p)}/workspace`, { query: { user }, body: { user, state }, keepalive: true });

// The SSE URL of a project's live run updates (see live.js).
export const liveUrl = (e, p, sinceUs) => `${proj(e, p)}/live${queryString({ since_us: sinceUs })}`;

// --- one run -------------------------------------------------------------------------

export const getRun = (e, p, id) => request("GET", runPath(e, p, id));
// → {numeric: [...], other: [...]}
export const runKeys = (e, p, id) => request("GET", `${runPath(e, p, id)}/keys`);
// → {series: [...]}
export const runHistory = (e, p, id, { keys, buckets, minStep, maxStep, signal }) =>
  request("GET", `${runPath(e, p, id)}/history`, {
    signal,
    query: { keys: (keys || []).join(","), buckets, min_step: minStep, max_step: maxStep },
  });

// patch: {name?, notes?, tags?, privacy?, hidden?, color?} → 202
export const patchRun = (e, p, id, patch) => request("PATCH", runPath(e, p, id), { body: patch });
export const deleteRun = (e, p, id) => request("DELETE", runPath(e, p, id));
// 409 FAILED_PRECONDITION when the run is not running.
export const stopRun = (e, p, id, who = "web") =>
  request("POST", `${runPath(e, p, id)}/stop`, { body: { requested_by: who } });
