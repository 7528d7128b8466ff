"""Campaign templates: a subject, a text body and an HTML body, per contact.

Templates are written by users of the platform, not by its operators, so they
run in Jinja's sandbox: attributes such as ``__class__`` are out of reach, and
a template that tries them fails with an ``InputError`` rather than rendering
anything.  ``StrictUndefined`` makes a misspelt field an error instead of an
empty string in a message sent to thousands of people.  Only the HTML body is
autoescaped; the subject and text body are not HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.nodes import Template as TemplateNode
from jinja2.sandbox import SandboxedEnvironment

from mailroom.addresses import check_header_value
from mailroom.errors import InputError

# The sandbox bounds range() but not repetition; "x" * 10**9 would still
# exhaust memory, so results of * and ** are capped.
_MAX_REPEAT: Final = 100_000
_MAX_EXPONENT: Final = 64

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
    return _BoundedSandbox(undefined=StrictUndefined, autoescape=autoescape)


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
            problem = f"template error on line {exc.lineno}: {exc.message}"
            fix = "check the {{ }} and {% %} tags"
            raise InputError(part, problem, fix) from exc

        self._trees[part] = tree
        self._compiled[part] = env.from_string(tree)

    def _render(self, part: str, fields: dict[str, str]) -> str | None:
        template = self._compiled.get(part)
        if template is None:
            return None
        try:
            return template.render(fields)
        except UndefinedError as exc:
            raise InputError(part, exc.message or "undefined", _UNDEFINED_FIX) from exc
        except SecurityError as exc:
            problem = f"the template tried something unsafe: {exc.message}"
            raise InputError(part, problem, "use only fields and filters") from exc
        except (TemplateError, ArithmeticError, TypeError, ValueError) as exc:
            problem = f"the template failed: {exc}"
            raise InputError(part, problem, "fix the expression") from exc


_UNDEFINED_FIX: Final = "add the column to the contacts file or fix its name"
