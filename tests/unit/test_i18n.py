"""The Japanese catalog: lookups, fallbacks, completeness and the CLI in Japanese."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from typer.testing import CliRunner

import mailroom
from mailroom import i18n
from mailroom.cli.app import app
from mailroom.errors import InputError, NotFoundError
from mailroom.teams import Team

PACKAGE = Path(mailroom.__file__).parent
LANG_VARIABLES = ("MAILROOM_LANG", "LANGUAGE", "LC_ALL", "LANG")


@pytest.fixture(autouse=True)
def clean_language(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in LANG_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    i18n.translations.cache_clear()
    yield
    i18n.translations.cache_clear()


def japanese_catalog() -> Catalog:
    with i18n.catalog_path("ja").open("rb") as po:
        return read_po(po, locale="ja")


def source_msgids() -> set[str]:
    """Every literal passed to ``_()`` or ``Text()`` in the package, as
    ``pybabel extract -k _ -k Text`` sees it."""
    found = extract_from_dir(
        PACKAGE, method_map=[("**.py", "python")], keywords={"_": None, "Text": None}
    )
    return {message for _file, _line, message, _comments, _ctx in found}


def placeholders(text: str) -> list[str]:
    # Whole replacement fields, so a translation that drops a format spec or a
    # conversion (``{at:%Y-%m-%d}``, ``{value!r}``) is caught too.
    fields = []
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is not None:
            fields.append(f"{name}!{conversion or ''}:{spec or ''}")
    return sorted(fields)


def test_japanese_is_chosen_by_mailroom_lang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILROOM_LANG", "ja")

    assert i18n._("the outbox is empty") == "送信トレイは空です"
    assert i18n._("updated channel {name}").format(name="sales") == (
        "チャネル sales を更新しました"
    )


def test_lang_is_read_when_mailroom_lang_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")

    assert i18n._("removed") == "配信停止リストから削除しました"


@pytest.mark.parametrize("lang", ["fr", "xx_YY.UTF-8", ""])
def test_unknown_language_falls_back_to_english(
    monkeypatch: pytest.MonkeyPatch, lang: str
) -> None:
    monkeypatch.setenv("MAILROOM_LANG", lang)

    assert i18n.language() == "en"
    assert i18n._("the outbox is empty") == "the outbox is empty"


def test_untranslated_and_fuzzy_entries_fall_back_to_english() -> None:
    catalog = Catalog(locale="ja")
    catalog.add("done", "完了")
    catalog.add("pending", "")
    catalog.add("guessed", "推測", flags=["fuzzy"])

    translations = i18n.CatalogTranslations(catalog)

    assert translations.gettext("done") == "完了"
    assert translations.gettext("pending") == "pending"
    assert translations.gettext("guessed") == "guessed"
    assert translations.gettext("never extracted") == "never extracted"


def test_every_source_message_has_a_japanese_translation() -> None:
    catalog = japanese_catalog()

    missing = sorted(
        msgid
        for msgid in source_msgids()
        if not (entry := catalog.get(msgid)) or not entry.string or entry.fuzzy
    )

    assert not missing, "translate these in ja/LC_MESSAGES/mailroom.po: " + repr(
        missing
    )


def test_translations_keep_the_placeholders_of_their_msgid() -> None:
    wrong = [
        (entry.id, entry.string)
        for entry in japanese_catalog()
        if entry.id
        and entry.string
        and placeholders(str(entry.id)) != placeholders(str(entry.string))
    ]

    assert not wrong


def test_cli_speaks_japanese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILROOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAILROOM_DATABASE_URL", raising=False)
    monkeypatch.delenv("MAILROOM_SECRET_KEY", raising=False)
    monkeypatch.setenv("MAILROOM_LANG", "ja")

    result = CliRunner().invoke(app, ["init"])

    assert result.exit_code == 0, result.output
    assert "を初期化しました" in result.output
    assert "秘密鍵:" in result.output


def test_text_is_translated_when_shown_not_when_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = i18n.Text("updated channel {name}", name="sales")

    monkeypatch.setenv("MAILROOM_LANG", "ja")
    assert str(text) == "チャネル sales を更新しました"
    monkeypatch.setenv("MAILROOM_LANG", "en")
    assert str(text) == "updated channel sales"


def test_a_text_parameter_is_shown_in_the_same_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = i18n.Text("updated channel {name}", name="sales")
    outer = i18n.Text("error: {error}", error=inner)
    monkeypatch.setenv("MAILROOM_LANG", "ja")

    assert str(outer) == "エラー: チャネル sales を更新しました"
    assert i18n.english(outer) == "error: updated channel sales"


def test_speaking_overrides_the_environment_for_a_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILROOM_LANG", "en")

    with i18n.speaking("ja"):
        assert i18n.language() == "ja"
        assert i18n._("the outbox is empty") == "送信トレイは空です"
    with i18n.speaking("fr"):
        assert i18n.language() == "en"
    assert i18n.language() == "en"


def test_input_error_keeps_its_english_form() -> None:
    error = InputError("to", "no recipients", "pass at least one --to address")

    assert str(error) == "to: no recipients (pass at least one --to address)"
    assert str(InputError("name", "is empty")) == "name: is empty"
    assert (error.field, error.problem, error.fix) == (
        "to",
        "no recipients",
        "pass at least one --to address",
    )


def test_a_core_error_speaks_the_language_of_whoever_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    team = Team(1, "acme", ["example.com"], ["alice@example.com"])
    with pytest.raises(InputError) as caught:
        team.check_member("ava@example.com")
    error = caught.value

    monkeypatch.setenv("MAILROOM_LANG", "ja")
    japanese = str(error)
    monkeypatch.setenv("MAILROOM_LANG", "en")
    english = str(error)

    assert japanese == (
        "from: ava@example.com はチーム 'acme' のメンバーではありません "
        "(`mailroom team add-member` でアドレスを追加してください)"
    )
    assert english == (
        "from: ava@example.com is not a member of team 'acme' "
        "(add the address with `mailroom team add-member`)"
    )
    with i18n.speaking("ja"):
        assert i18n.english(error) == english


def test_a_not_found_error_is_rendered_when_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = NotFoundError(i18n.Text("no team with id {id}", id=7))

    monkeypatch.setenv("MAILROOM_LANG", "ja")
    assert str(error) == "ID 7 のチームはありません"
    monkeypatch.setenv("MAILROOM_LANG", "en")
    assert str(error) == "no team with id 7"
