"""A plain-text rendering of an HTML body, for the text/plain alternative.

RFC 2046 5.1.4 orders the parts of ``multipart/alternative`` from plainest to
richest; mail clients that cannot or will not show HTML fall back to the text
part, and many spam filters score an HTML-only message lower.  The rendering is
deliberately simple: block elements become line breaks, links keep their
target, scripts and styles are dropped, and character references are decoded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Final

# Elements after which the text starts a new paragraph.
_PARAGRAPHS: Final = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table"}
    | {"ul", "ol", "section", "article", "header", "footer", "hr", "address"}
)

# Elements that end a line but not a paragraph.
_LINES: Final = frozenset({"br", "li", "tr", "dt", "dd"})

# Elements whose content is never text a reader should see.
_HIDDEN: Final = frozenset({"script", "style", "head", "title", "template"})

_SPACES: Final = re.compile(r"[ \t\r\n\f]+")
_BLANKS: Final = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Render *html* as plain text, with ``\\n`` line ends."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "pre":
            self._pre += 1
        self._break_for(tag)

        if tag == "li":
            self._out.append("- ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self._out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and <hr/> carry no content, so only their break matters.
        self._break_for(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        elif tag == "a" and self._links:
            self._close_link(*self._links.pop())

        # A line element breaks where it opens; a paragraph on both sides.
        if tag in _PARAGRAPHS:
            self._out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._pre:
            self._out.append(data)
            return

        # Outside <pre>, HTML whitespace is only a word separator.
        text = _SPACES.sub(" ", data)
        if not self._out or self._out[-1].endswith("\n"):
            text = text.lstrip(" ")
        self._out.append(text)

    def text(self) -> str:
        """The text gathered so far, tidied: no trailing spaces, ≤ 1 blank line."""
        lines = "".join(self._out).split("\n")
        text = "\n".join(line.rstrip(" ") for line in lines)
        return _BLANKS.sub("\n\n", text).strip("\n")

    def _break_for(self, tag: str) -> None:
        if tag in _PARAGRAPHS:
            self._out.append("\n\n")
        elif tag in _LINES:
            self._out.append("\n")

    def _close_link(self, href: str, start: int) -> None:
        # The reader of the text part cannot click, so the target is written
        # out, unless the link text already says it or it points in the page.
        label = "".join(self._out[start:]).strip()
        target = href.removeprefix("mailto:")
        if href and not href.startswith("#") and target != label:
            self._out.append(f" ({href})" if label else href)
