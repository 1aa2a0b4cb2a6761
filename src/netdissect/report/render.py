"""The report's one Jinja2 environment: every page and chart comes from templates/ through it.

Autoescape is on for every template and undefined names are errors (StrictUndefined), so a
label, a file name or a path can only ever reach a page as text.  The filters:

    url           a relative link, percent-encoded (autoescape then escapes the attribute)
    num(spec)     a number formatted with Python's format spec: {{ iou|num(".3f") }}
    basename      the last part of a slash-separated path
    script_json   JSON safe inside <script type="application/json">: the one value marked safe

The style sheet and the script (templates/report.css, report.js) are included as they are
(`{% include %}`; they hold no template syntax).
"""
from __future__ import annotations

import functools
import json
from urllib.parse import quote

import jinja2
from markupsafe import Markup

__all__ = ["render", "environment", "script_json", "url"]


def script_json(value) -> Markup:
    """JSON safe inside a <script> element: `<`, `>`, `&` and the JS line separators are
    written as \\u escapes, so no string in `value` can close the element or open a comment.
    Marked safe for autoescape: the only value of the report that is."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, code in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return Markup(text)


def url(path) -> str:
    """A relative link, percent-encoded (`/` and `#` kept); still to be HTML-escaped."""
    return quote(str(path), safe="/#")


def number(value, spec: str = "") -> str:
    """`value` formatted with a Python format spec (".3f", "g", ".4g", ...)."""
    return format(value, spec)


def basename(path) -> str:
    return str(path).rsplit("/", 1)[-1]


@functools.cache
def environment() -> jinja2.Environment:
    """The environment over the package's templates/ folder (built once)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("netdissect.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(url=url, num=number, basename=basename, script_json=script_json)
    return env


def render(name: str, **context) -> str:
    """Template `name` (under templates/) rendered with `context`."""
    return environment().get_template(name).render(**context)
