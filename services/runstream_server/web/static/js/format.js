// Formatting of times (µs since the epoch), durations, numbers and JSON text.

export function formatTime(us) {
  if (!us) return "";
  const d = new Date(us / 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// "5s ago", "3m ago", "2h ago", "4d ago", or the date beyond 30 days.
export function formatAgo(us, nowMs = Date.now()) {
  if (!us) return "never";
  const s = Math.max(0, (nowMs - us / 1000) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  if (s < 30 * 86400) return `${Math.round(s / 86400)}d ago`;
  return formatTime(us).slice(0, 10);
}

// Seconds → "45s", "3m 07s", "2h 05m", "3d 4h".
export function formatSeconds(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "";
  const neg = sec < 0 ? "-" : "";
  sec = Math.abs(sec);
  if (sec < 10) return `${neg}${sec.toFixed(sec < 1 && sec > 0 ? 2 : 1).replace(/\.0+$/, "")}s`;
  if (sec < 60) return `${neg}${Math.round(sec)}s`;
  const p = (n) => String(Math.floor(n)).padStart(2, "0");
  if (sec < 3600) return `${neg}${Math.floor(sec / 60)}m ${p(sec % 60)}s`;
  if (sec < 86400) return `${neg}${Math.floor(sec / 3600)}h ${p((sec % 3600) / 60)}m`;
  return `${neg}${Math.floor(sec / 86400)}d ${Math.floor((sec % 86400) / 3600)}h`;
}

export function formatDurationUs(us) {
  if (us === null || us === undefined || us < 0) return "";
  return formatSeconds(us / 1e6);
}

// A run's duration in µs: duration_us when the API gives it, else end (or last event,
// while running) minus start.
export function runDurationUs(run) {
  if (run.duration_us !== undefined && run.duration_us !== null) return run.duration_us;
  if (!run.start_time_us) return null;
  const end = run.end_time_us || run.last_event_time_us || 0;
  return end ? Math.max(0, end - run.start_time_us) : null;
}

export function formatBytes(n) {
  n = Number(n);
  if (!Number.isFinite(n) || n <= 0) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

// Numbers from the API may be "NaN" / "Infinity" strings (JSON has no such numbers).
export function num(v) {
  return typeof v === "number" ? v : Number(v);
}

// A compact number: integers as is, others with 4 significant digits.
export function formatNumber(v) {
  v = num(v);
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(4)));
}

// JSON text (config values, group keys) → value; the text itself when it is not JSON.
export function parseJson(text) {
  if (typeof text !== "string") return text;
  try { return JSON.parse(text); } catch { return text; }
}

// A value for display: strings without quotes, others as compact JSON.
export function displayValue(v) {
  if (v === null) return "null";
  if (typeof v === "string") return v;
  if (typeof v === "number") return formatNumber(v);
  return JSON.stringify(v);
}

// JSON text for display (config cells, group labels).
export function displayJson(text) {
  return displayValue(parseJson(text));
}
