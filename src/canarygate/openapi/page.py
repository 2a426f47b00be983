"""The OpenAPI document as one plain HTML page: every operation with its parameters, body and
answers, then every schema. Server-rendered once at start; no script, no asset from elsewhere."""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")
REF = re.compile(r"&quot;#/components/(schemas|parameters)/([A-Za-z0-9_]+)&quot;")
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;
color:#1d232a}
h1{font-size:1.6rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.5rem}
article{border:1px solid #d0d7de;border-radius:6px;padding:.2rem 1rem 1rem;margin:1rem 0}
h3{font-size:1.05rem;font-family:ui-monospace,monospace}
.m{display:inline-block;min-width:3.6rem;padding:.1rem .4rem;border-radius:4px;color:#fff;
text-align:center;margin-right:.5rem}.get{background:#1f6feb}.post{background:#1a7f37}
table{border-collapse:collapse;width:100%;margin:.4rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere;
border-radius:4px}
.auth{color:#9a6700}
"""


def inline(text: str) -> str:
    """Escaped text with the document's light markdown: `code` and **bold**."""
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def paragraphs(text: str) -> str:
    return "".join(f"<p>{inline(p)}</p>" for p in text.split("\n\n") if p.strip())


def schema_html(schema: Any, indent: int | None = 2) -> str:
    """A schema as indented JSON, each reference a link to the schema it names."""
    text = escape(json.dumps(schema, indent=indent), quote=True)
    return "<pre>" + REF.sub(r'<a href="#\1-\2">\2</a>', text) + "</pre>"


def brief(schema: dict[str, Any]) -> str:
    """A parameter's schema in a few words."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schemas-{name}">{name}</a>'
    kind = schema.get("type", "any")
    words = [" or ".join(kind) if isinstance(kind, list) else str(kind)]
    for key in ("enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "minLength",
                "maxLength", "default"):
        if key in schema:
            words.append(f"{key} {json.dumps(schema[key])}")
    return inline(", ".join(words))


def resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in item:
        kind, name = item["$ref"].split("/")[-2:]
        found: dict[str, Any] = doc["components"][kind][name]
        return found
    return item


def parameters_html(doc: dict[str, Any], op: dict[str, Any]) -> str:
    rows = []
    for raw in op.get("parameters", []):
        p = resolve(doc, raw)
        rows.append(f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['in']}</td>"
                    f"<td>{'yes' if p.get('required') else 'no'}</td>"
                    f"<td>{brief(p.get('schema', {}))}</td>"
                    f"<td>{inline(p.get('description', ''))}</td></tr>")
    if not rows:
        return ""
    return ("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
            "<th>schema</th><th>description</th></tr>" + "".join(rows) + "</table>")


def content_html(content: dict[str, Any]) -> str:
    parts = []
    for media, entry in content.items():
        note = inline(entry.get("description", ""))
        parts.append(f"<p><code>{escape(media)}</code> {note}</p>"
                     + schema_html(entry.get("schema", {})))
        if "example" in entry:
            parts.append("<p>For example:</p>" + schema_html(entry["example"], indent=None))
    return "".join(parts)


def body_html(op: dict[str, Any]) -> str:
    body = op.get("requestBody")
    if body is None:
        return ""
    needed = "required" if body.get("required") else "optional"
    return (f"<h4>Request body ({needed})</h4>" + paragraphs(body.get("description", ""))
            + content_html(body.get("content", {})))


def responses_html(op: dict[str, Any]) -> str:
    rows = []
    for status, answer in op["responses"].items():
        headers = ", ".join(f"<code>{escape(h)}</code>" for h in answer.get("headers", {}))
        media = "".join(
            f"<code>{escape(m)}</code>: " + brief(e.get("schema", {})) + "<br>"
            for m, e in answer.get("content", {}).items())
        rows.append(f"<tr><td>{status}</td><td>{inline(answer['description'])}</td>"
                    f"<td>{media}</td><td>{headers}</td></tr>")
    return ("<h4>Responses</h4><table><tr><th>status</th><th>when</th><th>body</th>"
            "<th>headers</th></tr>" + "".join(rows) + "</table>")


def operation_html(doc: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> str:
    role = op.get("x-canarygate-role")
    who = "a viewer's or an operator's" if role == "viewer" else "an operator's"
    auth = (f'<p class="auth">Admin API: <code>Authorization: Bearer &lt;token&gt;</code> '
            f"with {who} token.</p>" if role else "")
    return (f'<article id="op-{escape(op["operationId"])}"><h3><span class="m {method}">'
            f"{method.upper()}</span>{escape(path)}</h3><p>{inline(op['summary'])}</p>"
            + paragraphs(op.get("description", "")) + auth + parameters_html(doc, op)
            + body_html(op) + responses_html(op) + "</article>")


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, item[method]) for path, item in doc["paths"].items()
            for method in METHODS if method in item]


def render_page(doc: dict[str, Any]) -> str:
    info, ops = doc["info"], operations(doc)
    contents, sections = [], []
    for tag in doc["tags"]:
        mine = [o for o in ops if tag["name"] in o[2]["tags"]]
        contents.append(f'<li><a href="#tag-{tag["name"]}">{escape(tag["name"])}</a>: '
                        + ", ".join(f'<a href="#op-{o[2]["operationId"]}">{o[0].upper()} '
                                    f"{escape(o[1])}</a>" for o in mine) + "</li>")
        sections.append(f'<h2 id="tag-{tag["name"]}">{escape(tag["name"])}</h2>'
                        f"<p>{inline(tag['description'])}</p>"
                        + "".join(operation_html(doc, *o) for o in mine))
    schemas = "".join(f'<h3 id="schemas-{name}">{name}</h3>' + schema_html(schema)
                      for name, schema in doc["components"]["schemas"].items())
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(info['title'])} API</title><style>{STYLE}</style></head><body>"
            f"<h1>{escape(info['title'])} {escape(info['version'])}: HTTP API</h1>"
            '<p>The OpenAPI 3.1 document: <a href="/openapi.json">/openapi.json</a>. '
            f"{len(ops)} operations.</p>" + paragraphs(info["description"])
            + "<h2>Contents</h2><ul>" + "".join(contents) + "</ul>" + "".join(sections)
            + '<h2 id="schemas">Schemas</h2>' + schemas + "</body></html>")
