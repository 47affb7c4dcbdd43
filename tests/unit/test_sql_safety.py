"""User values never become SQL text (invariant 8): a static check of the server's SQL.

Every SQL statement the server builds with an f-string or ``str.format`` may interpolate
only the fragments listed in ``TRUSTED``: names whose values the code builds from
constants, validated identifiers (the database name) and ``{name:Type}`` placeholders of
clickhouse-connect's server-side parameter binding. Anything else (a value from a
request, an event or a filter) must travel as a bound parameter. A new interpolation
fails this test until it is reviewed and added here with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services" / "runstream_server"
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|ALTER|FROM|WHERE|PREWHERE|DROP|CREATE|OPTIMIZE|"
                       r"TRUNCATE|DELETE|ORDER BY|GROUP BY|JOIN)\b")

# Interpolated expression (as ast.unparse writes it) → why it is not a user value.
TRUSTED = {
    "self.db": "database name, checked against [A-Za-z_][A-Za-z0-9_]* at start",
    "self.database": "the same database name",
    "db": "the same database name (migrations, client helpers)",
    "name": "a table name read from system.tables and checked against the known tables",
    "t": "a table name the query code composes from self.db and a constant",
    "table": "one of the module's table-name constants",
    "where": "a WHERE clause of constant conditions and {name:Type} placeholders",
    "where_sql": "the same, joined with AND",
    "key_cond": "a constant condition with a {keys:Array(String)} placeholder",
    "order": "an ORDER BY from the module's _ORDER table, chosen by a regex-checked kind",
    "grp": "a constant group expression (_GROUP_OF) or ''",
    "_RUN_VIEW_COLUMNS": "constant column list",
    "PUBLIC_SQL": "constant condition (run_filter.py): privacy = 'public'",
    "public": "PUBLIC_SQL with a leading AND, or ''",
    "hidden": "a constant condition built from PUBLIC_SQL",
    "_STATE_COLUMNS": "constant column list",
    "_COLUMNS": "constant column list",
    "_LINE_SHIFT": "integer constant",
    "_PACK": "constant SQL expression",
    "_LINE": "constant SQL expression",
    "_ROLL_WHERE": "constant conditions with placeholders",
    "_RUN_STEPS": "constant SQL template",
    "_RUN_BUCKETS": "constant SQL template",
    "i": "a loop index over range(n), making placeholder names such as {lo_3:UInt64}",
    "self._buckets_sql(plan)": "SQL that _buckets_sql composes from the module's "
                               "templates (each .format of it checked here too)",
    "exact_sql": "_EXACT_SQL formatted with constants and the conditions below",
    "skip": "' OR '-joined _RANGE templates of placeholders",
    "' OR '.join(exact)": "_RANGE templates of placeholders and two constant conditions",
}


def _const_text(node: ast.JoinedStr) -> str:
    return "".join(v.value for v in node.values if isinstance(v, ast.Constant))


def _safe(node: ast.AST) -> bool:
    """A literal, a TRUSTED fragment, or a choice, concatenation or f-string of those; a
    ``.format`` call counts as safe here because that call is checked on its own."""
    if isinstance(node, ast.Constant) or ast.unparse(node) in TRUSTED:
        return True
    if isinstance(node, ast.IfExp):          # the condition picks; only branches are text
        return _safe(node.body) and _safe(node.orelse)
    if isinstance(node, ast.BinOp):
        return _safe(node.left) and _safe(node.right)
    if isinstance(node, ast.JoinedStr):
        return all(_safe(v.value) for v in node.values if isinstance(v, ast.FormattedValue))
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def sql_violations(source: str, filename: str = "<src>") -> list[str]:
    """Interpolations into SQL text that are not in TRUSTED, as "file:line: expr"."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) and SQL_WORDS.search(_const_text(node)):
            prev = ""
            for v in node.values:
                if isinstance(v, ast.Constant):
                    prev = v.value
                    continue
                expr = ast.unparse(v.value)
                quoted = prev.rstrip().endswith(("'", '"'))
                if not _safe(v.value) or quoted:
                    out.append(f"{filename}:{node.lineno}: {{{expr}}}"
                               + (" inside quotes" if quoted else ""))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "format"):
            target = node.func.value
            text = target.value if isinstance(target, ast.Constant) else None
            if isinstance(target, ast.Name) or (isinstance(text, str) and SQL_WORDS.search(text)):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    expr = ast.unparse(arg)
                    if not _safe(arg):
                        out.append(f"{filename}:{node.lineno}: .format({expr})")
    return out


def test_server_sql_interpolates_only_trusted_fragments():
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        found += sql_violations(path.read_text(), str(path.relative_to(SERVICES)))
    assert found == [], "SQL built from untrusted values:\n" + "\n".join(found)


def test_checker_flags_values_in_sql():
    bad = '''
def q(client, run_id, key):
    client.query(f"SELECT * FROM t WHERE run_id = '{run_id}'")
    client.query(f"SELECT * FROM {self.db}.runs WHERE key = {key}")
    client.query("SELECT * FROM t WHERE k = {k}".format(k=key))
'''
    found = sql_violations(bad)
    assert [f.split(": ", 1)[1] for f in found] == [
        "{run_id} inside quotes", "{key}", ".format(key)"]


def test_checker_accepts_bound_parameters():
    good = '''
def q(client, self, run_id):
    client.query(f"SELECT * FROM {self.db}.runs WHERE run_id = {{run_id:String}}",
                 parameters={"run_id": run_id})
    raise ValueError(f"run {run_id} not found")
'''
    assert sql_violations(good) == []
