"""Text from users and models on the site: escaped for where it lands, host details left out.

Model names and paths, corpus paths, CPU and GPU names, library strings can hold anything, so
templates pass them through `text` (Markdown prose and table cells) or `code` (a code span),
and every published JSON and page context goes through `redact` unless the build asked for
`include_host_info`.
"""

from __future__ import annotations

import getpass
import html
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

from markupsafe import Markup

MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def text(value: Any) -> Markup:
    """Escape `value` for Markdown prose or a table cell: no HTML, no Markdown syntax."""
    escaped = str(value) if isinstance(value, Markup) else html.escape(str(value), quote=True)
    return Markup(MARKDOWN_SPECIALS.sub(r"\\\1", escaped.replace("\n", " ")))


def markdown(value: Any) -> Markup:
    """Trusted Markdown our own analysis wrote (code spans, emphasis): no HTML, no links.

    Its sentences may quote names from a run's results, so tags are escaped and link brackets
    too (none of our sentences holds a link).
    """
    if isinstance(value, Markup):
        return value
    escaped = html.escape(str(value), quote=False)
    return Markup(re.sub(r"([\[\]])", r"\\\1", escaped))


def finalize(value: Any) -> Any:
    """What a template prints: Markup as it is, anything else escaped as `text`."""
    if isinstance(value, Markup) or value is None or isinstance(value, bool | int | float):
        return value
    return text(value)


def code(value: Any) -> Markup:
    """Show `value` as a Markdown code span, which Markdown itself escapes; no backtick breakout."""
    body = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    return Markup(f"{fence} {body} {fence}" if "`" in body else f"{fence}{body}{fence}")


VENV, USER, HOST = "<venv>", "<user>", "<host>"  # shown where host details were
PLACEHOLDERS = (VENV, USER, HOST)


def host_details() -> list[tuple[str, str]]:
    """(text to hide, what to show instead): the virtual environment, home, user and host."""
    found: list[tuple[str, str]] = []
    if sys.prefix != sys.base_prefix:
        found.append((sys.prefix, VENV))
    home = str(Path.home())
    if home not in ("/", ""):
        found.append((home, "~"))
    for getter, label in ((getpass.getuser, USER), (socket.gethostname, HOST)):
        try:
            value = getter()
        except (OSError, KeyError):  # no user name in containers without a passwd entry
            continue
        if value and len(value) > 2 and value not in ("root", "localhost"):
            found.append((value, label))
    return found


def redact(data: Any, details: list[tuple[str, str]] | None = None) -> Any:
    """`data` with every string's host details replaced (paths shortened); structure kept."""
    details = host_details() if details is None else details
    if isinstance(data, str):
        for secret, shown in details:
            data = _replace_word(data, secret, shown)
        return data
    if isinstance(data, dict):
        return {key: redact(value, details) for key, value in data.items()}
    if isinstance(data, list):
        return [redact(value, details) for value in data]
    return data


def _replace_word(value: str, secret: str, shown: str) -> str:
    if secret.startswith(os.sep):  # a folder: only where a path starts with it
        return re.sub(re.escape(secret) + r"(?=$|[\\/])", shown, value)
    return re.sub(r"(?<![\w.-])" + re.escape(secret) + r"(?![\w-])", shown, value)
