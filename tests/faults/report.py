"""Write the fault suite's last full figures (test-output/faults/*.json, from
``make faults``) into docs/reliability.md, between its ``faults:begin/end`` markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .harness import OUT

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
TITLES = {
    "embedded-server-kill-9": "`kill -9` of the embedded server (gateway, projector, reaper, api)",
    "kafka-gateway-kill-9": "`kill -9` of the gateway (Kafka deployment; the client reconnects)",
    "kafka-projector-kill-9": "`kill -9` of the projector (+ api) process mid-stream (Kafka)",
    "reconnect-storm": "reconnect storm: every client stream reconnects to a gateway restarted "
                       "after `kill -9` (Kafka; 2,000 streams)",
    "kafka-gateway-failover": "`kill -9` of the gateway the clients are on, with a second "
                              "one up (URL `ipv4:A,B`; the killed one returns later)",
    "kafka-broker-restart": "Kafka broker restarted mid-stream, same port and data (SIGKILL "
                            "and clean stops in turn; resume: from the broker serving again)",
    "kafka-network-cut": "gateway–broker network cut, blackhole (nothing forwarded, nobody "
                         "told; resume: from the heal)",
    "kafka-network-cut-reset": "gateway–broker network cut, reset (every connection reset, "
                               "new ones refused; resume: from the heal)",
    "reaper-gateway-outage": "every gateway down for several heartbeat timeouts, then back "
                             "(Kafka; reaper timeout shorter than the outage)",
    "client-offline": "clients offline (every connection reset) while they keep logging, "
                      "then back (embedded; resume: from the network's return)",
    "rate-limit-10x": "one run offering 10× its project's rate limit (embedded; the client "
                      "backs off on RESOURCE_EXHAUSTED)",
    "journal-disk-full": "client journal's disk full (tmpfs) while the server is down, then "
                         "the server back and the disk freed (embedded)",
}


def table() -> str:
    rows = ["| scenario | runs × events | kills | lost | duplicated | out of order | "
            "resume p99 (target 5 s) | date |", "|---|---|---|---|---|---|---|---|"]
    for name, title in TITLES.items():
        path = OUT / f"{name}.json"
        if not path.exists():
            rows.append(f"| {title} | not run at full size | | | | | | |")
            continue
        d = json.loads(path.read_text())
        if d.get("heartbeat_timeout_s"):    # the reaper's figures
            title += (f": outage {d['outage_of_s']:g} s, timeout {d['heartbeat_timeout_s']:g} s;"
                      f" **{d['false_crashes']} false crashes**; a true crash found in "
                      f"{max(d['detect_s']):.1f} s")
        if d.get("drain_per_s"):            # a client offline, then back
            title += (f": {d['outage_of_s']:g} s offline; journals drained at "
                      f"{d['drain_per_s']:,.0f} events/s, {d['drain_per_s'] / d['live_per_s']:.1f}"
                      f"× the live {d['live_per_s']:,.0f}/s (target 5×)")
        if d.get("limit_per_s"):            # a run over its rate limit
            title += (f": {d['offer_s']:g} s at 10× {d['limit_per_s']:,.0f} events/s; accepted "
                      f"{d['accepted_per_s']:,.0f}/s; server RSS +{d['rss_growth_mb']:.0f} MB "
                      "while offered 10×")
            if d.get("rss_growth_drain_mb"):
                title += (f", at most +{d['rss_growth_drain_mb']:.0f} MB over the whole "
                          "drain (a saw-tooth, no upward trend)")
        resume = d["resume_p99_s"]
        if d.get("probe_resume_s"):         # the storm: the column is a client's resume
            resume = d["probe_resume_p99_s"]
            title += (f"; the column: the {len(d['probe_resume_s'])} streams in a process of "
                      f"their own (as a training script's client is); the "
                      f"{d['runs'] - len(d['probe_resume_s']):,} streams sharing "
                      f"{d['streams_per_process']} per process and event loop: resume p99 "
                      f"{d['resume_p99_s']:.2f} s")
        lost = f"**{d['lost']}**"
        if d.get("dropped"):        # dropped by a documented policy: counted, not lost
            lost += f" ({d['dropped']:,} dropped, counted)"
        rows.append(f"| {title} | {d['runs']} × {d['events'] // d['runs']:,} | {d['kills']} | "
                    f"{lost} | **{d['duplicated']}** | **{d['out_of_order']}** | "
                    f"{f'{resume:.2f} s' if d['resume_s'] else ''} | {d['date']} |")
    return "\n".join(rows)


def main() -> int:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC} has no {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}")
    print(f"wrote the fault figures into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
