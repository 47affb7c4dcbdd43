// Run filters: the model, its query parameters and the filter bar (chips + "add" form).
//
// A filter is one of
//   {kind: "state",   value: "running"}              → state=running   (several: any of)
//   {kind: "tag",     value: "baseline"}             → tag=baseline    (several: all of)
//   {kind: "user",    value: "alice"}                → user=alice
//   {kind: "config",  key: "arch", value: "\"cnn\""} → config.arch="cnn" (value is JSON text)
//   {kind: "summary", key: "val/acc", lo: 0.5, hi: null} → summary.val/acc=0.5..
// Filters combine with AND (states among themselves with OR). The name search
// ({search, regex} of the workspace state) becomes name= or name_regex=.
// The same pairs drive /runs and /bands, so the charts show exactly the filtered runs.
//
// Test hooks: filter-add (button), filter-kind, filter-key, filter-value, filter-lo,
// filter-hi, filter-apply (form), filter-chip-<i> and filter-remove-<i> (chips).

import { h, clear, popover } from "./dom.js";
import { displayJson } from "./format.js";

export const STATES = ["running", "finished", "failed", "crashed", "killed"];
const KINDS = ["state", "tag", "user", "config", "summary"];

// state: the workspace state → [[name, value], ...]
export function filterParams(state) {
  const pairs = [];
  const q = (state.search || "").trim();
  if (q) pairs.push([state.regex ? "name_regex" : "name", q]);
  for (const f of state.filters || []) {
    switch (f.kind) {
      case "state": pairs.push(["state", f.value]); break;
      case "tag": pairs.push(["tag", f.value]); break;
      case "user": pairs.push(["user", f.value]); break;
      case "config": pairs.push([`config.${f.key}`, f.value]); break;
      case "summary": pairs.push([`summary.${f.key}`, `${bound(f.lo)}..${bound(f.hi)}`]); break;
      default: break;
    }
  }
  return pairs;
}

function bound(v) {
  return v === null || v === undefined || v === "" ? "" : String(v);
}

export function describe(f) {
  switch (f.kind) {
    case "state": return `state = ${f.value}`;
    case "tag": return `tag: ${f.value}`;
    case "user": return `user = ${f.value}`;
    case "config": return `${f.key} = ${displayJson(f.value)}`;
    case "summary": {
      const lo = bound(f.lo); const hi = bound(f.hi);
      if (lo && hi) return `${lo} ≤ ${f.key} ≤ ${hi}`;
      return lo ? `${f.key} ≥ ${lo}` : `${f.key} ≤ ${hi}`;
    }
    default: return JSON.stringify(f);
  }
}

// Text typed as a config value → JSON text: valid JSON stays (0.1, true, "x", [1]),
// anything else is taken as a string.
export function toJsonText(text) {
  const t = text.trim();
  try { JSON.parse(t); return t; } catch { return JSON.stringify(t); }
}

// A filter from the add form's fields, or an error message (string).
export function makeFilter(kind, { key = "", value = "", lo = "", hi = "" }) {
  key = key.trim(); value = value.trim(); lo = lo.trim(); hi = hi.trim();
  if (!KINDS.includes(kind)) return "unknown filter kind";
  if (kind === "config" || kind === "summary") {
    if (!key) return "choose a key";
  }
  if (kind === "summary") {
    const nlo = lo === "" ? null : Number(lo);
    const nhi = hi === "" ? null : Number(hi);
    if (nlo === null && nhi === null) return "give a lower or an upper bound";
    if ((nlo !== null && Number.isNaN(nlo)) || (nhi !== null && Number.isNaN(nhi))) return "bounds must be numbers";
    return { kind, key, lo: nlo, hi: nhi };
  }
  if (!value) return "give a value";
  if (kind === "config") return { kind, key, value: toJsonText(value) };
  return { kind, value };
}

// The filter bar. opts: {filters, onChange(filters), columns: async (prefix) → {config, summary}}
export function renderFilterBar(host, { filters, onChange, columns }) {
  clear(host);
  host.classList.add("filter-bar");
  filters.forEach((f, i) => {
    host.append(h("span", { class: "chip", testid: `filter-chip-${i}`, title: describe(f) },
      h("span", { text: describe(f) }),
      h("button", {
        class: "chip-x", text: "×", title: "Remove this filter", testid: `filter-remove-${i}`,
        on: { click: () => onChange(filters.filter((_, j) => j !== i)) },
      })));
  });
  const add = h("button", { class: "btn small", text: "+ Filter", testid: "filter-add" });
  add.addEventListener("click", () => openAddForm(add, { filters, onChange, columns }));
  host.append(add);
  if (filters.length > 1) {
    host.append(h("button", { class: "btn small link", text: "clear", testid: "filter-clear", on: { click: () => onChange([]) } }));
  }
}

function openAddForm(anchor, { filters, onChange, columns }) {
  const kind = h("select", { testid: "filter-kind" }, KINDS.map((k) => h("option", { value: k, text: k })));
  const fields = h("div", { class: "filter-fields" });
  const error = h("div", { class: "form-error" });
  const listId = `filter-keys-${Math.random().toString(36).slice(2)}`;
  const keyList = h("datalist", { id: listId });
  const inputs = {};

  const suggestKeys = async (prefix, section) => {
    if (!columns) return;
    try {
      const cols = await columns(prefix);
      clear(keyList);
      for (const k of cols[section] || []) keyList.append(h("option", { value: k }));
    } catch { /* suggestions are optional */ }
  };

  const build = () => {
    clear(fields);
    error.textContent = "";
    const k = kind.value;
    if (k === "state") {
      inputs.value = h("select", { testid: "filter-value" }, STATES.map((st) => h("option", { value: st, text: st })));
      fields.append(labelled("is", inputs.value));
      return;
    }
    if (k === "config" || k === "summary") {
      const section = k;
      inputs.key = h("input", { type: "text", placeholder: `${k} key`, testid: "filter-key", attrs: { list: listId, autocomplete: "off" } });
      inputs.key.addEventListener("input", () => suggestKeys(inputs.key.value, section));
      suggestKeys("", section);
      fields.append(labelled("key", inputs.key), keyList);
    }
    if (k === "summary") {
      inputs.lo = h("input", { type: "number", step: "any", placeholder: "min", testid: "filter-lo" });
      inputs.hi = h("input", { type: "number", step: "any", placeholder: "max", testid: "filter-hi" });
      fields.append(labelled("from", inputs.lo), labelled("to", inputs.hi));
    } else {
      inputs.value = h("input", { type: "text", placeholder: k === "config" ? "value (JSON or text)" : k, testid: "filter-value" });
      fields.append(labelled(k === "config" ? "=" : "is", inputs.value));
    }
  };
  kind.addEventListener("change", () => { for (const k of Object.keys(inputs)) delete inputs[k]; build(); });
  build();

  const apply = () => {
    const f = makeFilter(kind.value, {
      key: inputs.key ? inputs.key.value : "",
      value: inputs.value ? inputs.value.value : "",
      lo: inputs.lo ? inputs.lo.value : "",
      hi: inputs.hi ? inputs.hi.value : "",
    });
    if (typeof f === "string") { error.textContent = f; return; }
    pop.close();
    onChange([...filters, f]);
  };
  const form = h("form", { class: "filter-form", on: { submit: (e) => { e.preventDefault(); apply(); } } },
    labelled("filter on", kind), fields, error,
    h("div", { class: "modal-buttons" }, h("button", { class: "btn primary", type: "submit", text: "Apply", testid: "filter-apply" })));
  const pop = popover(anchor, form, { testid: "filter-form" });
}

function labelled(text, input) {
  return h("label", { class: "field" }, h("span", { text }), input);
}
