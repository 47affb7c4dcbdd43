// An SVG line chart, drawn by hand (no library).
//
//   const chart = new LineChart(host, {onZoom, onReset, height});
//   chart.setModel({lines, xKind, xDomain, smoothing, message});
//
// A line: {id, kind: "run"|"group", label, color, count?, step[], value[],
//          time_us?[], start_us?, lo?[], hi?[], showBand?}
//   step/value(/time_us/lo/hi) are parallel arrays in ascending step order; values may
//   be NaN (a gap). lo/hi is a shaded band: a run's min/max per downsampled bucket, or a
//   group's mean ± std or min–max. showBand false hides it.
// xKind: "step" | "wall" (time_us, drawn as clock time) | "relative" (seconds since
//   start_us, else since the line's first point). Lines without time_us use steps.
// xDomain: [lo, hi] in x units, or null (fit the data).
// smoothing: EMA weight 0..0.99 (debiased, as TensorBoard); the raw line stays faint.
// message: text drawn instead of data ("Loading…", an error), or null.
//
// Events: onZoom({x: [lo, hi], steps: [minStep, maxStep]}) after a drag across the plot
// (steps: the step range of the points inside, for re-querying the server);
// onReset() on double-click.
//
// DOM hooks: each line is one <path data-run=<id>> or <path data-group=<id>>; a group
// band is <path data-testid="band-<id>">, a run's min/max band <path data-minmax=<id>>;
// the raw line under a smoothed one is <path data-raw=<id>>; legend items are
// data-testid="legend-<id>".

import { h, s, clear } from "./dom.js";
import { formatNumber, formatSeconds } from "./format.js";

const MARGIN = { l: 58, r: 14, t: 10, b: 26 };
let uid = 0;

export class LineChart {
  constructor(host, { onZoom = null, onReset = null, height = 220 } = {}) {
    this.host = host;
    this.height = height;
    this.onZoom = onZoom;
    this.onReset = onReset;
    this.clipId = `clip-${++uid}`;
    this.model = { lines: [], xKind: "step", xDomain: null, smoothing: 0, message: null };
    this.plot = h("div", { class: "chart-plot" });
    this.legend = h("div", { class: "chart-legend" });
    this.tip = h("div", { class: "chart-tip" });
    host.append(this.plot, this.legend);
    this.plot.append(this.tip);
    this.width = 0;
    this.resize = new ResizeObserver(() => {
      const w = this.plot.clientWidth;
      if (w && Math.abs(w - this.width) > 1) this.render();
    });
    this.resize.observe(this.plot);
  }

  destroy() {
    this.resize.disconnect();
    clear(this.host);
  }

  setModel(model) {
    this.model = { ...this.model, ...model };
    this.render();
  }

  // Width in pixels of the plotting area (for choosing the number of buckets).
  plotWidth() {
    return Math.max(50, (this.plot.clientWidth || 600) - MARGIN.l - MARGIN.r);
  }

  render() {
    const W = Math.max(200, this.plot.clientWidth || 600);
    const H = this.height;
    this.width = W;
    const pw = W - MARGIN.l - MARGIN.r;
    const ph = H - MARGIN.t - MARGIN.b;
    const { lines, smoothing, message } = this.model;
    const useTime = this.model.xKind !== "step" && lines.length > 0 && lines.every((l) => l.time_us && l.time_us.length === l.step.length);
    const xKind = useTime ? this.model.xKind : "step";
    this.xKind = xKind;

    // Prepared lines: x and y arrays in data units.
    const prep = lines.map((l) => {
      const xs = xValues(l, xKind);
      const raw = l.value.map(Number);
      const ys = smoothing > 0 ? ema(raw, smoothing) : raw;
      return { line: l, xs, raw, ys, lo: l.lo ? l.lo.map(Number) : null, hi: l.hi ? l.hi.map(Number) : null };
    });
    this.prep = prep;

    let [x0, x1] = this.model.xDomain || extent(prep.flatMap((p) => p.xs));
    if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const inX = (x) => x >= x0 && x <= x1;
    const yVals = [];
    for (const p of prep) {
      for (let i = 0; i < p.xs.length; i += 1) {
        if (!inX(p.xs[i])) continue;
        yVals.push(p.ys[i]);
        if (smoothing > 0) yVals.push(p.raw[i]);
        if (p.lo && p.line.showBand !== false) { yVals.push(p.lo[i], p.hi[i]); }
      }
    }
    let [y0, y1] = extent(yVals);
    if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;

    const sx = (x) => MARGIN.l + ((x - x0) / (x1 - x0)) * pw;
    const sy = (y) => MARGIN.t + (1 - (y - y0) / (y1 - y0)) * ph;
    this.scale = { x0, x1, y0, y1, pw, ph, sx, sy };

    const svg = s("svg", { class: "chart-svg", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    svg.append(s("defs", {}, s("clipPath", { id: this.clipId }, s("rect", { x: MARGIN.l, y: MARGIN.t, width: pw, height: ph }))));

    // Axes and grid.
    const grid = s("g", { class: "grid" });
    const yt = niceTicks(y0, y1, Math.max(2, Math.floor(ph / 30)));
    for (const t of yt) {
      grid.append(s("line", { x1: MARGIN.l, x2: MARGIN.l + pw, y1: sy(t), y2: sy(t) }));
      grid.append(s("text", { class: "tick y", x: MARGIN.l - 6, y: sy(t) + 4, text: formatTick(t) }));
    }
    const nx = Math.max(2, Math.floor(pw / 70));
    const xt = xKind === "wall" ? timeTicks(x0, x1, nx) : xKind === "relative" ? durationTicks(x0, x1, nx) : niceTicks(x0, x1, nx);
    const span = x1 - x0;
    for (const t of xt) {
      grid.append(s("line", { class: "x", x1: sx(t), x2: sx(t), y1: MARGIN.t, y2: MARGIN.t + ph }));
      grid.append(s("text", { class: "tick x", x: sx(t), y: H - 8, text: formatX(t, xKind, span) }));
    }
    grid.append(s("rect", { class: "frame", x: MARGIN.l, y: MARGIN.t, width: pw, height: ph }));
    svg.append(grid);

    // Bands, raw lines, lines (clipped to the plotting area).
    const data = s("g", { "clip-path": `url(#${this.clipId})` });
    for (const p of prep) {
      if (!p.lo || p.line.showBand === false) continue;
      const d = bandPath(p.xs, p.lo, p.hi, sx, sy);
      if (!d) continue;
      const attrs = { d, class: "band", fill: p.line.color };
      if (p.line.kind === "group") { attrs.testid = `band-${p.line.id}`; attrs["data-band-group"] = p.line.id; }
      else attrs["data-minmax"] = p.line.id;
      data.append(s("path", attrs));
    }
    if (smoothing > 0) {
      for (const p of prep) {
        data.append(s("path", { d: linePath(p.xs, p.raw, sx, sy), class: "raw", stroke: p.line.color, "data-raw": p.line.id }));
      }
    }
    for (const p of prep) {
      const attrs = { d: linePath(p.xs, p.ys, sx, sy), class: "line", stroke: p.line.color };
      attrs[p.line.kind === "group" ? "data-group" : "data-run"] = p.line.id;
      data.append(s("path", attrs));
      if (p.xs.length === 1) {   // a single point: a dot, or nothing would show
        data.append(s("circle", { cx: sx(p.xs[0]), cy: sy(p.ys[0]), r: 2.5, fill: p.line.color }));
      }
    }
    svg.append(data);

    if (message || !lines.length || !lines.some((l) => l.step.length)) {
      svg.append(s("text", { class: "chart-message", x: MARGIN.l + pw / 2, y: MARGIN.t + ph / 2, text: message || "No data" }));
    }

    // Interaction: crosshair + tooltip, drag to zoom, double-click to reset.
    this.cross = s("line", { class: "crosshair", y1: MARGIN.t, y2: MARGIN.t + ph, visibility: "hidden" });
    this.sel = s("rect", { class: "selection", y: MARGIN.t, height: ph, visibility: "hidden" });
    const overlay = s("rect", { class: "overlay", x: MARGIN.l, y: MARGIN.t, width: pw, height: ph });
    svg.append(this.cross, this.sel, overlay);
    this.bindOverlay(overlay);

    for (const old of this.plot.querySelectorAll("svg")) old.remove();
    this.plot.insertBefore(svg, this.tip);
    this.renderLegend();
  }

  renderLegend() {
    clear(this.legend);
    for (const l of this.model.lines) {
      const label = l.count !== undefined ? `${l.label} (${l.count})` : l.label;
      this.legend.append(h("span", { class: "legend-item", testid: `legend-${l.id}`, title: label },
        h("span", { class: "swatch", style: { background: l.color } }), h("span", { text: label })));
    }
  }

  bindOverlay(overlay) {
    const { x0, x1, pw } = this.scale;
    const toX = (px) => x0 + ((px - MARGIN.l) / pw) * (x1 - x0);
    const localX = (e) => {
      const r = overlay.ownerSVGElement.getBoundingClientRect();
      return Math.max(MARGIN.l, Math.min(MARGIN.l + pw, e.clientX - r.left));
    };
    let dragFrom = null;
    overlay.addEventListener("mousedown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      dragFrom = localX(e);
      const move = (ev) => {
        const x = localX(ev);
        this.sel.setAttribute("x", Math.min(dragFrom, x));
        this.sel.setAttribute("width", Math.abs(x - dragFrom));
        this.sel.setAttribute("visibility", "visible");
      };
      const up = (ev) => {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
        this.sel.setAttribute("visibility", "hidden");
        const x = localX(ev);
        const from = dragFrom;
        dragFrom = null;
        if (Math.abs(x - from) < 5 || !this.onZoom) return;
        const a = toX(Math.min(from, x));
        const b = toX(Math.max(from, x));
        this.onZoom({ x: [a, b], steps: this.stepRange(a, b) });
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });
    overlay.addEventListener("dblclick", () => { if (this.onReset) this.onReset(); });
    overlay.addEventListener("mousemove", (e) => {
      if (dragFrom !== null) return;
      this.showTip(toX(localX(e)), localX(e));
    });
    overlay.addEventListener("mouseleave", () => {
      this.cross.setAttribute("visibility", "hidden");
      this.tip.style.display = "none";
    });
  }

  // The step range of the points whose x lies in [a, b] (whole range when none do).
  stepRange(a, b) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of this.prep) {
      for (let i = 0; i < p.xs.length; i += 1) {
        if (p.xs[i] >= a && p.xs[i] <= b) {
          lo = Math.min(lo, p.line.step[i]);
          hi = Math.max(hi, p.line.step[i]);
        }
      }
    }
    if (!Number.isFinite(lo)) {
      if (this.xKind === "step") return [Math.max(0, Math.floor(a)), Math.max(0, Math.ceil(b))];
      return [0, 0];
    }
    return [lo, hi];
  }

  showTip(x, px) {
    const rows = [];
    for (const p of this.prep) {
      const i = nearest(p.xs, x);
      if (i < 0) continue;
      rows.push({ p, i, y: p.ys[i] });
    }
    if (!rows.length) return;
    this.cross.setAttribute("x1", px);
    this.cross.setAttribute("x2", px);
    this.cross.setAttribute("visibility", "visible");
    rows.sort((a, b) => (Number.isFinite(b.y) ? b.y : -Infinity) - (Number.isFinite(a.y) ? a.y : -Infinity));
    clear(this.tip);
    const head = rows[0];
    this.tip.append(h("div", { class: "tip-x", text: `${this.xKind === "step" ? "step" : ""} ${formatX(head.p.xs[head.i], this.xKind, 0)}`.trim() }));
    for (const r of rows.slice(0, 12)) {
      this.tip.append(h("div", { class: "tip-row" },
        h("span", { class: "swatch", style: { background: r.p.line.color } }),
        h("span", { class: "tip-label", text: r.p.line.label }),
        h("span", { class: "tip-value", text: formatNumber(r.y) })));
    }
    this.tip.style.display = "block";
    const left = px + 12 + this.tip.offsetWidth > this.width ? px - 12 - this.tip.offsetWidth : px + 12;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${MARGIN.t}px`;
  }
}

// --- pure helpers (exported for reuse and tests) -------------------------------------

export function xValues(line, xKind) {
  if (xKind === "wall" && line.time_us) return line.time_us.map((t) => Number(t) / 1000);
  if (xKind === "relative" && line.time_us) {
    const start = line.start_us || (line.time_us.length ? Number(line.time_us[0]) : 0);
    return line.time_us.map((t) => (Number(t) - start) / 1e6);
  }
  return line.step.map(Number);
}

// Debiased exponential moving average; non-finite inputs stay gaps and are skipped.
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0;
  let n = 0;
  for (let i = 0; i < values.length; i += 1) {
    const v = values[i];
    if (!Number.isFinite(v)) { out[i] = v; continue; }
    last = last * weight + (1 - weight) * v;
    n += 1;
    out[i] = last / (1 - weight ** n);
  }
  return out;
}

export function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function r1(v) {
  return Math.round(v * 10) / 10;
}

// "M x y L x y ..." restarting (M) after each gap.
export function linePath(xs, ys, sx, sy) {
  let d = "";
  let pen = false;
  for (let i = 0; i < xs.length; i += 1) {
    if (!Number.isFinite(ys[i]) || !Number.isFinite(xs[i])) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${r1(sx(xs[i]))} ${r1(sy(ys[i]))}`;
    pen = true;
  }
  return d;
}

// A closed area between lo and hi, one polygon per run of finite points.
export function bandPath(xs, lo, hi, sx, sy) {
  let d = "";
  let seg = [];
  const flush = () => {
    if (seg.length > 0) {
      const fwd = seg.map((i) => `${r1(sx(xs[i]))} ${r1(sy(hi[i]))}`);
      const back = seg.slice().reverse().map((i) => `${r1(sx(xs[i]))} ${r1(sy(lo[i]))}`);
      d += `M${fwd.join("L")}L${back.join("L")}Z`;
    }
    seg = [];
  };
  for (let i = 0; i < xs.length; i += 1) {
    if (Number.isFinite(lo[i]) && Number.isFinite(hi[i]) && Number.isFinite(xs[i])) seg.push(i);
    else flush();
  }
  flush();
  return d;
}

// The index of the point nearest to x in ascending xs, or -1.
export function nearest(xs, x) {
  if (!xs.length) return -1;
  let lo = 0;
  let hi = xs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && Math.abs(xs[lo - 1] - x) <= Math.abs(xs[lo] - x)) return lo - 1;
  return lo;
}

// About `count` round ticks (1, 2, 2.5, 5 × 10^k) inside [lo, hi].
export function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    out.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
  }
  return out;
}

const SEC = 1000;
const TIME_STEPS_MS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400, 172800, 604800].map((x) => x * SEC);

// Ticks for clock time (x in ms since the epoch), on round local times.
function timeTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  const step = TIME_STEPS_MS.find((st) => st >= raw);
  if (!step) return niceTicks(lo, hi, count);
  const offset = new Date(lo).getTimezoneOffset() * 60 * SEC;
  const out = [];
  for (let t = Math.ceil((lo - offset) / step) * step + offset; t <= hi; t += step) out.push(t);
  return out;
}

// Ticks for durations (x in seconds).
function durationTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  if (raw < 1) return niceTicks(lo, hi, count);
  const step = TIME_STEPS_MS.map((m) => m / SEC).find((st) => st >= raw);
  if (!step) return niceTicks(lo, hi, count);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return out;
}

function formatX(t, xKind, span) {
  if (xKind === "wall") {
    const d = new Date(t);
    const p = (n) => String(n).padStart(2, "0");
    const hm = `${p(d.getHours())}:${p(d.getMinutes())}`;
    if (span && span > 2 * 86400 * SEC) return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${hm}`;
    if (span && span > 600 * SEC) return hm;
    return `${hm}:${p(d.getSeconds())}`;
  }
  if (xKind === "relative") return span && span < 120 ? `${formatNumber(Number(t.toPrecision(6)))}s` : formatSeconds(t);
  return formatTick(t);
}

// A short axis label: 1.25G, 350k, 0.005, 1e-7.
export function formatTick(v) {
  const a = Math.abs(v);
  if (a >= 1e4 && Number.isFinite(v)) {
    for (const [d, suffix] of [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (a >= d) return `${Number((v / d).toPrecision(4))}${suffix}`;
    }
  }
  return formatNumber(v);
}
