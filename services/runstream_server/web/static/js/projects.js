// The projects page: #/ — every project with its run count and last activity, and a
// search box filtering by name.
//
//   mount(root) → {unmount()}
// Test hooks: project-search (input), projects-list, project-<name> (one item each).

import { listProjects } from "./api.js";
import { h, clear } from "./dom.js";
import { formatAgo, formatTime } from "./format.js";

export function mount(root) {
  let projects = [];
  let stopped = false;
  const search = h("input", { type: "search", placeholder: "Search projects…", testid: "project-search", class: "search" });
  const list = h("div", { class: "project-list", testid: "projects-list" }, h("div", { class: "loading", text: "Loading projects…" }));
  clear(root);
  root.append(h("div", { class: "projects-page" },
    h("div", { class: "page-head" }, h("h2", { text: "Projects" }), search), list));

  const render = () => {
    clear(list);
    const q = search.value.trim().toLowerCase();
    const shown = projects.filter((p) => !q || p.name.toLowerCase().includes(q) || p.entity.toLowerCase().includes(q));
    if (!shown.length) {
      list.append(h("div", { class: "empty", text: projects.length ? "No project matches." : "No projects yet: start a run with runstream.init(project=...)." }));
      return;
    }
    for (const p of shown) {
      const href = `#/p/${encodeURIComponent(p.entity)}/${encodeURIComponent(p.name)}`;
      list.append(h("a", { class: "project-item", href, testid: `project-${p.name}` },
        h("div", { class: "project-name" }, h("span", { class: "muted", text: `${p.entity} / ` }), h("strong", { text: p.name })),
        h("div", { class: "project-meta" },
          h("span", { text: `${p.run_count} run${p.run_count === 1 ? "" : "s"}`, testid: "project-runs" }),
          h("span", { class: "muted", text: `last activity ${formatAgo(p.last_event_time_us)}`, title: formatTime(p.last_event_time_us) }))));
    }
  };
  search.addEventListener("input", render);

  listProjects().then((ans) => {
    if (stopped) return;
    projects = (ans.projects || []).slice().sort((a, b) => (b.last_event_time_us || 0) - (a.last_event_time_us || 0));
    render();
  }).catch((e) => {
    if (stopped) return;
    clear(list);
    list.append(h("div", { class: "error", text: `Projects not loaded: ${e.message}` }));
  });
  search.focus();
  return { unmount: () => { stopped = true; } };
}
