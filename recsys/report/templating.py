"""The Jinja2 environment of every page the suite writes (leaderboard.md and .html, breakdown.md, the atlas).

Templates are package data under ``recsys/report/templates/``. HTML templates (``*.html.j2``) are autoescaped:
every string from the data is escaped unless a caller marks it safe on purpose (``markupsafe.Markup``);
Markdown templates (``*.md.j2``) are not, and escape table cells with the ``cell`` filter. Undefined names are
errors, not empty strings.
"""

from __future__ import annotations

import re
from functools import cache

import jinja2
from markupsafe import Markup, escape


def md_cell(value) -> str:
    """Text for one Markdown table cell: a ``|`` would end the cell, a newline the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def inline_code(value) -> Markup:
    """HTML of a text that marks code with backticks (as the Markdown does): the text escaped, then each
    `` `x` `` made ``<code>x</code>``."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(value))))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("recsys.report", "templates"),
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = md_cell
    env.filters["code"] = inline_code
    return env


def render(template: str, **context) -> str:
    """The template ``template`` (a file name under ``templates/``) rendered with ``context``."""
    return environment().get_template(template).render(**context)
