"""Visible text of an HTML page with the standard library's ``html.parser``.

Script, style and other non-content elements are dropped; block elements (paragraphs, headings,
list items, table rows, ...) become paragraphs separated by a blank line, so that the length
filter can later split the text at paragraph boundaries. Whitespace inside a paragraph is
collapsed, except inside ``<pre>``. The page's ``<html lang>`` is returned as its language.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Optional

SKIP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas"}
BLOCK = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "h1", "h2", "h3",
    "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "thead", "tbody",
    "blockquote", "pre", "figure", "figcaption", "hr", "title", "body", "form", "fieldset", "address",
}
BREAK = "\x00"  # paragraph marker while collecting (NUL never survives into the text)
_SPACES = re.compile(r"[ \t\r\f\v\n]+")
_BREAKS = re.compile(r"\s*\x00[\s\x00]*")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.lang: Optional[str] = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "html" and self.lang is None:
            lang = dict(attrs).get("lang")
            self.lang = lang.strip() or None if lang else None
        if tag in SKIP:
            self.skip += 1
        elif tag == "pre":
            self.pre += 1
        if tag in BLOCK:
            self.parts.append(BREAK)
        elif tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in BLOCK:
            self.parts.append(BREAK)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.parts.append(data.replace(BREAK, "") if self.pre else _SPACES.sub(" ", data))


def html_to_text(html: str) -> tuple[str, Optional[str]]:
    """(visible text with paragraphs separated by blank lines, language of the page or None)."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    text = "".join(collector.parts)
    paragraphs = [p.strip("\n").rstrip() for p in _BREAKS.split(text)]
    body = "\n\n".join(p.lstrip(" ") if "\n" not in p else p for p in paragraphs if p.strip())
    return (body + "\n" if body else ""), collector.lang
