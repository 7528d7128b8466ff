"""Campaign templates: a subject, a text body and an HTML body, per contact.

Templates are written by users of the platform, not by its operators, so they
run in Jinja's sandbox: attributes such as ``__class__`` are out of reach, and
a template that tries them fails with an ``InputError`` rather than rendering
anything.  ``StrictUndefined`` makes a misspelt field an error instead of an
empty string in a message sent to thousands of people.  Only the HTML body is
autoescaped; the subject and text body are not HTML.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.nodes import Template as TemplateNode
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from mailroom.addresses import check_header_value
from mailroom.errors import InputError
from mailroom.i18n import Text

# The sandbox bounds range() but not repetition; "x" * 10**9 would still
# exhaust memory, so results of * and ** are capped.
_MAX_REPEAT: Final = 100_000
_MAX_EXPONENT: Final = 64
# Filters are capped too (center(10**9), replace and join can each make
# gigabytes), and so is what one part may render to.
_MAX_OUTPUT: Final = 1_000_000

_PARTS: Final = ("subject", "text", "html")


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` unable to build huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent above {_MAX_EXPONENT}")
            return left**right
        _check_repeat(left, right)
        return left * right


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
        if sized and len(seq) * count > _MAX_REPEAT:
            raise SecurityError(f"repetition longer than {_MAX_REPEAT}")


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = _BoundedSandbox(undefined=StrictUndefined, autoescape=autoescape)
    env.filters = {name: _bounded(name, f) for name, f in env.filters.items()}
    env.filters["replace"] = _bounded("replace", _safe_replace)
    env.filters["join"] = _bounded("join", _safe_join(env.filters["join"]))
    return env


def _bounded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that refuses huge sizes (center(10**9)) and huge results."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            too_big = isinstance(value, int) and abs(value) > _MAX_REPEAT
            if too_big and not isinstance(value, bool):
                raise SecurityError(f"{name}: a size above {_MAX_REPEAT}")
        result = func(*args, **kwargs)
        if isinstance(result, str | list | tuple) and len(result) > _MAX_OUTPUT:
            raise SecurityError(f"{name}: a result longer than {_MAX_OUTPUT}")
        return result

    return bounded


def _safe_replace(value: Any, old: str, new: str, count: int | None = None) -> Any:
    text = str(value)
    grown = text.count(old) * max(0, len(new) - len(old)) if old else len(new)
    if len(text) + grown > _MAX_OUTPUT:
        raise SecurityError(f"replace: a result longer than {_MAX_OUTPUT}")
    result = text.replace(old, new, -1 if count is None else count)
    # Markup in, Markup out, as the built-in filter does for HTML bodies.
    return type(value)(result) if isinstance(value, Markup) else result


def _safe_join(join: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(join)
    def safe_join(eval_ctx: Any, value: Any, d: str = "", *args: Any) -> Any:
        items = list(value)
        if len(d) * len(items) > _MAX_OUTPUT:
            raise SecurityError(f"join: a result longer than {_MAX_OUTPUT}")
        return join(eval_ctx, items, d, *args)

    return safe_join


_PLAIN: Final = _environment(autoescape=False)
_HTML: Final = _environment(autoescape=True)


@dataclass(frozen=True)
class Rendered:
    """One contact's subject and bodies."""

    subject: str
    text: str | None
    html: str | None


class MessageTemplate:
    """A compiled subject, text body and HTML body."""

    def __init__(self, subject: str, text: str | None, html: str | None) -> None:
        self._trees: dict[str, TemplateNode] = {}
        self._compiled: dict[str, Template] = {}
        for part, source in zip(_PARTS, (subject, text, html), strict=True):
            if source is not None:
                self._compile(part, source)

    def required_fields(self) -> set[str]:
        """Every field name the template reads, in any part."""
        names: set[str] = set()
        for tree in self._trees.values():
            names |= meta.find_undeclared_variables(tree)
        return names

    def render(self, fields: dict[str, str]) -> Rendered:
        """Render every part for one contact's *fields*.

        Raises ``InputError`` naming the part on a missing field, an unsafe
        access, or a subject that would break the header (RFC 5322 2.2).
        """
        subject = self._render("subject", fields) or ""
        check_header_value("subject", subject)
        return Rendered(
            subject, self._render("text", fields), self._render("html", fields)
        )

    def _compile(self, part: str, source: str) -> None:
        env = _HTML if part == "html" else _PLAIN
        try:
            tree = env.parse(source)
        except TemplateSyntaxError as exc:
            # Jinja2's own words (exc.message) stay as Jinja2 wrote them.
            problem = Text(
                "template error on line {line}: {message}",
                line=exc.lineno,
                message=exc.message,
            )
            fix = Text(
                "check the {variable} and {statement} tags",
                variable="{{ }}",
                statement="{% %}",
            )
            raise InputError(part, problem, fix) from exc

        self._trees[part] = tree
        self._compiled[part] = env.from_string(tree)

    def _render(self, part: str, fields: dict[str, str]) -> str | None:
        template = self._compiled.get(part)
        if template is None:
            return None
        try:
            return _render_bounded(template, fields)
        except UndefinedError as exc:
            problem = exc.message or Text("undefined")
            raise InputError(part, problem, _UNDEFINED_FIX) from exc
        except SecurityError as exc:
            problem = Text(
                "the template tried something unsafe: {message}", message=exc.message
            )
            fix = Text("use only fields and filters")
            raise InputError(part, problem, fix) from exc
        except (TemplateError, ArithmeticError, TypeError, ValueError) as exc:
            problem = Text("the template failed: {reason}", reason=str(exc))
            raise InputError(part, problem, Text("fix the expression")) from exc


def _render_bounded(template: Template, fields: dict[str, str]) -> str:
    # Streamed, so a loop that writes without end stops at the cap.
    pieces, size = [], 0
    for piece in template.generate(fields):
        size += len(piece)
        if size > _MAX_OUTPUT:
            raise SecurityError(f"the message is longer than {_MAX_OUTPUT}")
        pieces.append(piece)
    return "".join(pieces)


_UNDEFINED_FIX: Final = Text("add the column to the contacts file or fix its name")
