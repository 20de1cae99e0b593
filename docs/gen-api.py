#!/usr/bin/env python3
"""Renders the generated parts of docs/api.md from the sources that define them.

* the route table, from gateway/src/openapi.json (the document the gateway serves at
  GET /openapi.json);
* the Job field table, from the Job and JobSubmission schemas of the same document;
* the error code table, from gateway/src/error.rs (CODES), checked against
  storage/src/error.rs (ErrorCode and its http_status).

Each part sits between `<!-- BEGIN GENERATED <NAME> ... -->` and `<!-- END GENERATED <NAME> -->`
markers in docs/api.md; everything outside the markers is written by hand and left alone.

    python3 docs/gen-api.py           # rewrite docs/api.md
    python3 docs/gen-api.py --check   # exit 1 if docs/api.md is not what the sources give

Python 3 standard library only.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "gateway" / "src" / "openapi.json"
GATEWAY_ERRORS = ROOT / "gateway" / "src" / "error.rs"
STORAGE_ERRORS = ROOT / "storage" / "src" / "error.rs"
API_MD = ROOT / "docs" / "api.md"

# The read floor header is accepted on every authenticated route; the page says so once
# instead of repeating it in every row.
COMMON_HEADERS = {"X-Launcher-Min-Index"}


def resolve(doc, obj):
    """Follows a local `$ref` (`#/components/...`)."""
    while isinstance(obj, dict) and "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def cell(text):
    """Text that is safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def type_name(doc, schema):
    """A short type for a schema: `string`, `integer`, `NameValue[]`, ..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type")
    if kind == "array":
        return type_name(doc, schema.get("items", {})) + "[]"
    if kind == "string" and schema.get("format") == "date-time":
        return "string (RFC 3339)"
    if kind is None:
        return "any JSON"
    return kind


def routes_table(doc):
    rows = [
        "| Method | Path | Access | Query parameters | Request headers | Success | Error statuses | What it does |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            summary = op.get("summary", "")
            if op.get("security") == []:
                access = "none"
            elif "(admins)" in summary:
                access = "admin token"
            else:
                access = "token"
            summary = re.sub(r"\s*\((admins|unauthenticated)\)$", "", summary)
            params = [resolve(doc, p) for p in item.get("parameters", []) + op.get("parameters", [])]
            query = ", ".join(f"`{p['name']}`" for p in params if p["in"] == "query")
            headers = ", ".join(
                f"`{p['name']}`"
                for p in params
                if p["in"] == "header" and p["name"] not in COMMON_HEADERS
            )
            ok, errors = [], []
            for status, response in op["responses"].items():
                response = resolve(doc, response)
                if status.startswith("2"):
                    types = " or ".join(f"`{t}`" for t in response.get("content", {}))
                    ok.append(f"{status} {types}".strip())
                else:
                    errors.append(status)
            rows.append(
                "| {} | `{}` | {} | {} | {} | {} | {} | {} |".format(
                    method.upper(),
                    path,
                    access,
                    query or "—",
                    headers or "—",
                    cell("; ".join(ok)),
                    " ".join(errors) or "—",
                    cell(summary),
                )
            )
    return "\n".join(rows)


def job_table(doc):
    schemas = doc["components"]["schemas"]
    job, submission = schemas["Job"], schemas["JobSubmission"]
    required = set(submission.get("required", []))
    rows = ["| Field | Type | On submit | Notes |", "|---|---|---|---|"]
    for name, schema in job["properties"].items():
        sub = submission["properties"].get(name)
        sub_desc = (sub or {}).get("description", "")
        if sub is None:
            on_submit = "not accepted"
        elif sub_desc.startswith("Set by the system"):
            on_submit = "set by the system (a value sent is ignored)"
        elif name in required:
            on_submit = "required"
        elif name in ("command", "exe"):
            on_submit = "exactly one of `command`, `exe`"
        else:
            on_submit = "optional"
        notes = [schema.get("description", "")]
        if sub_desc and not sub_desc.startswith("Set by the system") and sub_desc.rstrip(".") not in notes[0]:
            notes.append(sub_desc)
        rows.append(
            f"| `{name}` | {cell(type_name(doc, schema))} | {on_submit} | {cell(' '.join(n for n in notes if n))} |"
        )
    return "\n".join(rows)


def gateway_codes():
    text = GATEWAY_ERRORS.read_text()
    return [(int(c), n, int(s)) for c, n, s in re.findall(r'\((\d+), "(\w+)", (\d+)\)', text)]


def storage_codes():
    text = STORAGE_ERRORS.read_text()
    enum = re.search(r"pub enum ErrorCode \{(.*?)\n\}", text, re.S).group(1)
    numbers = {n: int(c) for n, c in re.findall(r"^\s*(\w+) = (\d+),", enum, re.M)}
    body = re.search(r"pub fn http_status\(self\) -> u16 \{(.*?)\n    \}", text, re.S).group(1)
    statuses = {n: int(s) for n, s in re.findall(r"ErrorCode::(\w+) => (\d+),", body)}
    return sorted((numbers[n], n, statuses[n]) for n in numbers)


def codes_table():
    gateway, storage = gateway_codes(), storage_codes()
    if gateway != storage:
        sys.exit(
            "gen-api.py: gateway/src/error.rs and storage/src/error.rs disagree on the error codes:\n"
            f"  gateway: {gateway}\n  storage: {storage}"
        )
    rows = ["| Code | Name | HTTP status |", "|---|---|---|"]
    rows += [f"| {c} | `{n}` | {s} |" for c, n, s in gateway]
    return "\n".join(rows)


def render(text, name, body):
    pattern = re.compile(
        rf"(<!-- BEGIN GENERATED {name}[^\n]*-->\n).*?(<!-- END GENERATED {name} -->)", re.S
    )
    if not pattern.search(text):
        sys.exit(f"gen-api.py: docs/api.md has no GENERATED {name} markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main():
    doc = json.loads(OPENAPI.read_text())
    old = API_MD.read_text()
    new = old
    new = render(new, "ROUTES", routes_table(doc))
    new = render(new, "JOB FIELDS", job_table(doc))
    new = render(new, "ERROR CODES", codes_table())
    if "--check" in sys.argv[1:]:
        if new != old:
            sys.exit("docs/api.md is out of date: run python3 docs/gen-api.py")
        return
    if new != old:
        API_MD.write_text(new)
        print("docs/api.md updated")
    else:
        print("docs/api.md is up to date")


if __name__ == "__main__":
    main()
