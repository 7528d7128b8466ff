"""MessageTemplate: compile, required fields, sandboxed rendering."""

from __future__ import annotations

import pytest

from mailroom.campaigns import MessageTemplate, Rendered
from mailroom.errors import InputError


def test_renders_all_three_parts() -> None:
    template = MessageTemplate(
        "Hi {{ name }}", "Dear {{ name }},\nbye", "<p>Dear {{ name }}</p>"
    )

    assert template.render({"name": "Ann"}) == Rendered(
        "Hi Ann", "Dear Ann,\nbye", "<p>Dear Ann</p>"
    )


def test_only_html_is_autoescaped() -> None:
    template = MessageTemplate("{{ co }}", "{{ co }}", "<b>{{ co }}</b>")
    rendered = template.render({"co": "Smith & <Sons>"})

    assert rendered.subject == "Smith & <Sons>"
    assert rendered.text == "Smith & <Sons>"
    assert rendered.html == "<b>Smith &amp; &lt;Sons&gt;</b>"


def test_missing_parts_render_as_none() -> None:
    rendered = MessageTemplate("S", None, "<p>h</p>").render({})

    assert rendered.text is None
    assert rendered.html == "<p>h</p>"


def test_required_fields_cover_every_part() -> None:
    template = MessageTemplate(
        "{{ first }}",
        "{% for x in items %}{{ x }}{% endfor %}{{ company }}",
        "{% set local = 1 %}{{ local }}{{ city|upper }}",
    )

    assert template.required_fields() == {"first", "items", "company", "city"}


@pytest.mark.parametrize(
    ("parts", "field", "line"),
    [
        (("Hi {{ name", None, None), "subject", 1),
        (("ok", "line one\n{% if %}", None), "text", 2),
        (("ok", None, "<p>\n\n{% endfor %}</p>"), "html", 3),
    ],
)
def test_syntax_error_names_part_and_line(
    parts: tuple[str, str | None, str | None], field: str, line: int
) -> None:
    with pytest.raises(InputError) as caught:
        MessageTemplate(*parts)

    assert caught.value.field == field
    assert f"line {line}" in str(caught.value.problem)


def test_missing_field_is_an_error_naming_the_part() -> None:
    template = MessageTemplate("Hi", "Dear {{ nmae }}", None)

    with pytest.raises(InputError) as caught:
        template.render({"name": "Ann"})
    assert caught.value.field == "text"
    assert "nmae" in str(caught.value.problem)


@pytest.mark.parametrize("value", ["Hi\r\nBcc: eve@example.com", "two\nlines"])
def test_rendered_subject_may_not_break_the_header(value: str) -> None:
    template = MessageTemplate("{{ s }}", "body", None)

    with pytest.raises(InputError) as caught:
        template.render({"s": value})
    assert caught.value.field == "subject"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__init__.__globals__ }}",
        "{{ name|attr('__class__') }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_escapes_fail_clearly(source: str) -> None:
    template = MessageTemplate("s", source, None)

    with pytest.raises(InputError) as caught:
        template.render({"name": "Ann"})
    assert caught.value.field == "text"
    assert "<class" not in str(caught.value)
    assert "module" not in str(caught.value)


def test_unsafe_attribute_reports_unsafe() -> None:
    template = MessageTemplate("{{ ''.__class__ }}", None, None)

    with pytest.raises(InputError) as caught:
        template.render({})
    assert "unsafe" in str(caught.value.problem)


@pytest.mark.parametrize(
    "source", ["{{ 'x' * 1000000000 }}", "{{ 10 ** 100000000 }}", "{{ [1] * 10**7 }}"]
)
def test_huge_values_are_refused(source: str) -> None:
    with pytest.raises(InputError) as caught:
        MessageTemplate("s", source, None).render({})
    assert caught.value.field == "text"


def test_small_repetition_still_works() -> None:
    rendered = MessageTemplate("s", "{{ '-' * 5 }}{{ 2 ** 3 }}", None).render({})

    assert rendered.text == "-----8"


def test_runtime_errors_are_input_errors() -> None:
    with pytest.raises(InputError) as caught:
        MessageTemplate("s", None, "{{ 1 / 0 }}").render({})
    assert caught.value.field == "html"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'|center(10**7) }}",
        "{{ ('x'*100000)|replace('x','x'*100) }}",
        "{{ ('x'*100000)|list|join('x'*100) }}",
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    ],
)
def test_templates_cannot_build_huge_messages(source: str) -> None:
    template = MessageTemplate("Hi", source, None)

    with pytest.raises(InputError) as caught:
        template.render({})

    assert caught.value.field == "text"


def test_ordinary_filters_still_work() -> None:
    template = MessageTemplate(
        "{{ name|upper }}", "{{ name|replace('a', 'o') }} {{ items|join(', ') }}", None
    )

    rendered = template.render({"name": "ava", "items": ["a", "b"]})

    assert (rendered.subject, rendered.text) == ("AVA", "ovo a, b")
