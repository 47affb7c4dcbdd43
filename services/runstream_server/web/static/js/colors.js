// Run and group colours (and the effective hidden flag, kept beside them). A run's colour is, in order: the workspace's choice, the run's
// own `color` (PATCHed from any client), else a palette colour picked by hashing its id,
// so colours stay put when the sort or the page changes.

// 16 colours told apart easily on white (the first ten: the familiar category10).
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#1b2a84", "#e6ab02",
  "#0b7285", "#ae017e", "#66a61e", "#343a40",
];

function hash(str) {
  let x = 2166136261;
  for (let i = 0; i < str.length; i += 1) {
    x ^= str.charCodeAt(i);
    x = Math.imul(x, 16777619);
  }
  return x >>> 0;
}

export function defaultColor(id) {
  return PALETTE[hash(String(id)) % PALETTE.length];
}

// The colour chosen for a run (workspace first, then the run's own), or "" for none.
// A workspace entry of "" means "back to the default colour".
export function chosenColor(state, run) {
  const colors = (state && state.colors) || {};
  if (Object.hasOwn(colors, run.run_id)) return colors[run.run_id] || "";
  return run.color || "";
}

// state: the workspace state ({colors}); run: a RunView; auto: optional Map run_id →
// colour from assignColors() (distinct colours for the drawn runs).
export function runColor(state, run, auto = null) {
  return chosenColor(state, run) || (auto && auto.get(run.run_id)) || defaultColor(run.run_id);
}

// Default colours for the runs drawn together: each run gets its hashed palette colour,
// or the next one not taken yet (runs visited in run id order, chosen colours count as
// taken), so up to PALETTE.length runs get distinct colours that do not change with the
// sort. → Map run_id → colour.
export function assignColors(state, runs) {
  const taken = new Set();
  const out = new Map();
  for (const r of runs) {
    const c = chosenColor(state, r);
    if (c) taken.add(c.toLowerCase());
  }
  const free = runs.filter((r) => !chosenColor(state, r)).map((r) => r.run_id).sort();
  for (const id of free) {
    const first = hash(String(id)) % PALETTE.length;
    let pick = PALETTE[first];
    for (let k = 0; k < PALETTE.length; k += 1) {
      const c = PALETTE[(first + k) % PALETTE.length];
      if (!taken.has(c)) { pick = c; break; }
    }
    taken.add(pick);
    out.set(id, pick);
  }
  return out;
}

// Whether the run is hidden from the charts: the workspace's choice, else the run's own.
export function runHidden(state, run) {
  const hidden = (state && state.hidden) || {};
  return Object.hasOwn(hidden, run.run_id) ? !!hidden[run.run_id] : !!run.hidden;
}

// The i-th group's colour (groups are sorted by their value).
export function groupColor(i) {
  return PALETTE[i % PALETTE.length];
}

// "#abc" → "#aabbcc" (an <input type=color> needs the long form).
export function longHex(c) {
  if (/^#[0-9a-f]{3}$/i.test(c)) return `#${c[1]}${c[1]}${c[2]}${c[2]}${c[3]}${c[3]}`;
  return /^#[0-9a-f]{6}$/i.test(c) ? c.toLowerCase() : "#000000";
}
