"""Published input limits, enforced in one place (the gateway's validation).

docs/limits.md lists them for users; the client SDK checks the same numbers early.
"""

import re

MAX_ID_CHARS = 128                 # run id, project, entity
MAX_KEY_CHARS = 256                # metric, config and summary keys
MAX_KEYS_PER_EVENT = 10_000        # entries of one log / config / summary update
MAX_EVENTS_PER_REQUEST = 100_000
# Log.step is a fixed64 on the wire; run state keeps the last step as a signed 64-bit
# integer (ClickHouse Int64, -1 before the first log), so steps stop at 2**63 - 1.
MAX_STEP = 2**63 - 1
# Run ids become URLs and file names: URL-safe characters only.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")  # \Z: "$" would accept a trailing "\n"
# Project and entity names appear in URLs; these characters would break them.
NAME_FORBIDDEN = re.compile(r"[/\\#?%:\x00-\x1f\x7f]")
