// The column chooser: a popover listing config and summary keys of the project, read
// lazily from GET /columns?prefix=&limit= as the user types (a prefix search).
//
//   openColumnChooser(anchor, {fetchColumns(prefix) → {config, summary, truncated},
//                              chosen: ["config.<k>", ...], onChange(columns)})
// Test hooks: column-search (input), column-option-<config.k|summary.k> (checkboxes).

import { h, clear, popover, debounce } from "./dom.js";

const LIMIT = 50;

export function openColumnChooser(anchor, { fetchColumns, chosen, onChange }) {
  let current = [...chosen];
  const search = h("input", { type: "search", placeholder: "Search keys (prefix)…", testid: "column-search", attrs: { autocomplete: "off" } });
  const list = h("div", { class: "column-list" });
  const note = h("div", { class: "muted small" });

  const toggle = (col, on) => {
    current = on ? [...current.filter((c) => c !== col), col] : current.filter((c) => c !== col);
    onChange(current);
  };

  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    note.textContent = "Loading…";
    let cols;
    try {
      cols = await fetchColumns(search.value.trim());
    } catch (e) {
      if (mine === seq) note.textContent = `Error: ${e.message}`;
      return;
    }
    if (mine !== seq) return;
    clear(list);
    for (const [section, label] of [["config", "Config"], ["summary", "Summary"]]) {
      const keys = cols[section] || [];
      list.append(h("div", { class: "column-section", text: `${label} (${keys.length}${cols.truncated ? "+" : ""})` }));
      for (const k of keys) {
        const col = `${section}.${k}`;
        const box = h("input", { type: "checkbox", checked: current.includes(col), testid: `column-option-${col}` });
        box.addEventListener("change", () => toggle(col, box.checked));
        list.append(h("label", { class: "column-option", title: col }, box, h("span", { text: k })));
      }
    }
    note.textContent = cols.truncated ? `Showing the first ${LIMIT} per section: type to narrow.` : "";
  };
  search.addEventListener("input", debounce(load, 200));
  const pop = popover(anchor, h("div", { class: "column-chooser" }, search, note, list), { testid: "column-popover" });
  search.focus();
  load();
  return pop;
}

export { LIMIT as COLUMN_LIMIT };
