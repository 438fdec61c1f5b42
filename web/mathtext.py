"""LaTeX in review text rendered as MathML on the server, so the page needs no script, font or CDN.

Chromium, Firefox and Safari render MathML natively, so the page keeps its Content-Security-Policy
(`default-src 'none'`, no script). `render_math(text)` escapes everything outside math and converts each math span
with the `latex2mathml` package:
- spans: `$$...$$` and `\\[...\\]` (block), `$...$` and `\\(...\\)` (inline; a `$` span starts and ends next
  to a non-space and is not followed by a digit, so "costs $5 and $6" stays text), and a bare `\\boxed{...}` in plain text
  (how solutions state their final answer);
- the converter's element tree is rebuilt through an allow-list of MathML elements and attributes (so a
  `\\href{javascript:...}` or a `\\text{<img ...>}` in generated text can never become markup), its text unescaped
  once and serialised with ElementTree, which escapes it again;
- a span that does not convert stays as escaped source text.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

from markupsafe import Markup, escape

MATHML = "http://www.w3.org/1998/Math/MathML"
ALLOWED_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt", "mroot",
    "mstyle", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "menclose", "mpadded", "mphantom",
    "semantics", "annotation", "merror",
}
ALLOWED_ATTRS = {
    "display", "mathvariant", "displaystyle", "scriptlevel", "stretchy", "fence", "separator", "lspace", "rspace",
    "notation", "linethickness", "accent", "accentunder", "movablelimits", "width", "height", "depth",
    "columnalign", "rowspacing", "columnspacing", "columnlines", "rowlines", "frame", "linebreak", "mathcolor",
    "mathbackground", "minsize", "maxsize", "largeop", "symmetric", "form",
}
_SPANS = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<db>.+?)\\\]|\\\((?P<ip>.+?)\\\)|(?<![\\$\w])\$(?=\S)(?P<id>[^$\n]+?)(?<=\S)\$(?!\d)"
    r"|(?P<boxed>\\boxed\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})",
    re.S,
)


def render_math(text) -> Markup:
    """Escaped text with its LaTeX math spans as MathML (safe to put in a page)."""
    text = "" if text is None else str(text)
    out, last = [], 0
    for match in _SPANS.finditer(text):
        out.append(escape(text[last:match.start()]))
        kind = match.lastgroup
        latex = match.group(kind)
        out.append(_convert(latex, "block" if kind in ("dd", "db") else "inline") or escape(match.group(0)))
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def _convert(latex: str, display: str) -> Markup | None:
    from latex2mathml.converter import convert_to_element

    try:
        element = convert_to_element(latex.strip(), display=display)
    except Exception:  # noqa: BLE001  (any LaTeX the converter cannot handle stays as text)
        return None
    clean = _clean(element)
    if clean is None:
        return None
    clean.set("xmlns", MATHML)
    return Markup(ET.tostring(clean, encoding="unicode", short_empty_elements=False))


def _clean(element: ET.Element) -> ET.Element | None:
    tag = element.tag.split("}")[-1]
    if tag not in ALLOWED_TAGS:
        return None
    out = ET.Element(tag, {k: html.unescape(v) for k, v in element.attrib.items() if k in ALLOWED_ATTRS})
    out.text = html.unescape(element.text) if element.text else None
    for child in element:
        cleaned = _clean(child)
        if cleaned is None:  # an element outside MathML: keep its text only
            text = "".join(child.itertext())
            cleaned = ET.Element("mtext")
            cleaned.text = html.unescape(text)
        cleaned.tail = None
        out.append(cleaned)
        if child.tail:
            cleaned.tail = html.unescape(child.tail)
    return out
