// Small DOM helpers shared by every module. No state lives here.

const SVG_NS = "http://www.w3.org/2000/svg";

// h(tag, props, ...children) → HTMLElement.
// props: class, text, testid (→ data-testid), dataset {}, style {}, on {event: fn},
// attrs {} (setAttribute), and any other key is set as a property (value, checked, ...).
// children: nodes, strings, or (nested) arrays of them; null/false are skipped.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

// s(tag, attrs, ...children) → SVGElement; attrs are set with setAttribute
// (testid → data-testid; on {event: fn} adds listeners).
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "testid") {
      el.setAttribute("data-testid", v);
    } else if (k === "text") {
      el.textContent = v;
    } else {
      el.setAttribute(k, v);
    }
  }
  append(el, children);
  return el;
}

function applyProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined) continue;
    switch (k) {
      case "class": el.className = v; break;
      case "text": el.textContent = v; break;
      case "testid": el.dataset.testid = v; break;
      case "dataset": Object.assign(el.dataset, v); break;
      case "style": Object.assign(el.style, v); break;
      case "on": for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn); break;
      case "attrs": for (const [a, av] of Object.entries(v)) if (av !== null && av !== undefined && av !== false) el.setAttribute(a, av); break;
      default: el[k] = v;
    }
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Calls fn(...args) once, ms after the last call. .flush() runs a pending call now,
// .cancel() drops it.
export function debounce(fn, ms) {
  let timer = null;
  let lastArgs = null;
  const d = (...args) => {
    lastArgs = args;
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...lastArgs); }, ms);
  };
  d.flush = () => { if (timer !== null) { clearTimeout(timer); timer = null; fn(...lastArgs); } };
  d.cancel = () => { clearTimeout(timer); timer = null; };
  return d;
}

// Runs fn at most once per ms (leading call at once, then one trailing call with the
// latest arguments). .cancel() drops a pending trailing call.
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let pendingArgs = null;
  const run = () => { last = Date.now(); timer = null; const a = pendingArgs; pendingArgs = null; fn(...a); };
  const t = (...args) => {
    pendingArgs = args;
    if (timer !== null) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(run, wait);
  };
  t.cancel = () => { clearTimeout(timer); timer = null; pendingArgs = null; };
  return t;
}

// A popover anchored under `anchor`, closed by outside click or Escape.
// Returns {el, close}. onClose() runs once when it closes.
export function popover(anchor, content, { onClose, testid, className = "" } = {}) {
  closePopovers();
  const el = h("div", { class: `popover ${className}`, testid }, content);
  document.body.append(el);
  const r = anchor.getBoundingClientRect();
  const left = Math.min(r.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - el.offsetWidth - 8);
  el.style.left = `${Math.max(4, left)}px`;
  el.style.top = `${r.bottom + window.scrollY + 4}px`;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    el.remove();
    document.removeEventListener("mousedown", outside, true);
    document.removeEventListener("keydown", esc, true);
    openPopovers.delete(close);
    if (onClose) onClose();
  };
  const outside = (e) => { if (!el.contains(e.target) && !anchor.contains(e.target)) close(); };
  const esc = (e) => { if (e.key === "Escape") close(); };
  document.addEventListener("mousedown", outside, true);
  document.addEventListener("keydown", esc, true);
  openPopovers.add(close);
  return { el, close };
}

const openPopovers = new Set();
export function closePopovers() { for (const c of [...openPopovers]) c(); }

// A modal confirmation. Resolves true (OK) or false (Cancel / Escape).
// Test hooks: confirm-dialog, confirm-ok, confirm-cancel.
export function confirmDialog(message, { ok = "OK", danger = false } = {}) {
  return new Promise((resolve) => {
    const done = (v) => { back.remove(); document.removeEventListener("keydown", key, true); resolve(v); };
    const key = (e) => { if (e.key === "Escape") done(false); };
    const okBtn = h("button", { class: danger ? "btn danger" : "btn primary", text: ok, testid: "confirm-ok", on: { click: () => done(true) } });
    const back = h("div", { class: "modal-back" },
      h("div", { class: "modal", testid: "confirm-dialog", attrs: { role: "dialog", "aria-modal": "true" } },
        h("p", { text: message }),
        h("div", { class: "modal-buttons" },
          h("button", { class: "btn", text: "Cancel", testid: "confirm-cancel", on: { click: () => done(false) } }),
          okBtn)));
    document.addEventListener("keydown", key, true);
    document.body.append(back);
    okBtn.focus();
  });
}

// A short message in the corner (errors of background actions).
export function toast(message, kind = "info") {
  let host = document.querySelector(".toasts");
  if (!host) { host = h("div", { class: "toasts" }); document.body.append(host); }
  const t = h("div", { class: `toast ${kind}`, text: message, testid: "toast" });
  host.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 6000 : 3000);
}
