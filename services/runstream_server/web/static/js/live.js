// Live run updates of a project over Server-Sent Events
// (GET /api/v1/projects/{e}/{p}/live?since_us=, `event: runs`; api/live.py).
//
//   const live = openLive(entity, project, onChange, {onReconnect});   live.close();
//   onChange({runs, deleted, nowUs}): runs = [{run_id, name, state, state_cause,
//     last_event_time_us, last_step, end_time_us, summary, hidden, color}] changed since
//     the last message (each with its whole current row), deleted = [run_id, ...].
//     Callers throttle their own re-reads (the workspace: at most once a second).
//   onReconnect(): the stream was reopened after an error; changes made by the server
//     alone meanwhile (rename, hide, delete, ...) are not replayed, so re-read the runs.
// The first stream starts at the server's "now"; after an error it is reopened (after
// 2 s, doubling up to 30 s) from the newest now_us seen.

import { liveUrl } from "./api.js";

export function openLive(entity, project, onChange, { onReconnect = null } = {}) {
  let since = null;      // server time (µs) of the newest message
  let source = null;
  let timer = null;
  let closed = false;
  let backoff = 2000;
  let reopened = false;

  const connect = () => {
    if (closed) return;
    source = new EventSource(liveUrl(entity, project, since));
    source.addEventListener("open", () => {
      if (reopened && onReconnect) onReconnect();
      reopened = false;
    });
    source.addEventListener("runs", (ev) => {
      backoff = 2000;
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      if (data.now_us) since = data.now_us;
      const runs = data.runs || [];
      const deleted = data.deleted || [];
      if (runs.length || deleted.length) onChange({ runs, deleted, nowUs: data.now_us });
    });
    source.addEventListener("error", () => {
      if (closed) return;
      source.close();
      reopened = true;
      clearTimeout(timer);
      timer = setTimeout(connect, backoff);
      backoff = Math.min(30000, backoff * 2);
    });
  };
  connect();

  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
    },
  };
}
