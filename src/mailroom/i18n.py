"""English and Japanese, read straight from the ``.po`` catalogs with Babel.

The language comes from ``MAILROOM_LANG``, else ``LANGUAGE``/``LC_ALL``/``LANG``;
English is the fallback.  Catalogs live in ``mailroom/locale/<lang>/LC_MESSAGES``.
No compiled ``.mo`` file is kept: a binary in the repository can silently drift
from the ``.po`` it was built from, so the text catalog is the only source.

``_()`` translates at once, for text shown right away.  ``Text`` is a message
translated when it is shown: an error raised by the core keeps its ``Text``
and speaks whichever language is current when it is printed.  ``speaking()``
sets that language for a block (one request, or ``english()`` for text that is
stored rather than shown).
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

DOMAIN = "mailroom"
LOCALE_DIR = Path(__file__).with_name("locale")
SUPPORTED = ("en", "ja")

# Set by ``speaking()``; None leaves the choice to the environment.
_spoken: ContextVar[str | None] = ContextVar("mailroom_language", default=None)


def language() -> str:
    """The language ``speaking()`` set, else the first supported one the
    environment names, else English."""
    spoken = _spoken.get()
    if spoken is not None:
        return spoken
    for variable in ("MAILROOM_LANG", "LANGUAGE", "LC_ALL", "LANG"):
        value = os.environ.get(variable, "")
        code = value.split(":")[0].split(".")[0].split("_")[0].lower()
        if code in SUPPORTED:
            return code
    return "en"


def catalog_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


class CatalogTranslations(gettext.NullTranslations):
    """Translations held in memory, from the finished entries of a catalog.

    Fuzzy entries are guesses that no translator has confirmed yet (GNU gettext
    manual, "Fuzzy Entries"), so they fall back to English like empty ones.
    """

    def __init__(self, catalog: Catalog) -> None:
        super().__init__()
        self._messages = {
            message.id: message.string
            for message in catalog
            if message.id
            and isinstance(message.id, str)
            and isinstance(message.string, str)
            and message.string
            and not message.fuzzy
        }

    def gettext(self, message: str) -> str:
        return self._messages.get(message, message)


@lru_cache(maxsize=4)
def translations(lang: str) -> gettext.NullTranslations:
    """The cached translations for ``lang``; English has no catalog of its own."""
    path = catalog_path(lang)
    if not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        return CatalogTranslations(read_po(po, locale=lang, domain=DOMAIN))


def _(message: str) -> str:
    """The message in the user's language."""
    return translations(language()).gettext(message)


@contextmanager
def speaking(lang: str) -> Iterator[None]:
    """Translate into ``lang`` inside the block, whatever the environment says."""
    token = _spoken.set(lang if lang in SUPPORTED else "en")
    try:
        yield
    finally:
        _spoken.reset(token)


def english(value: object) -> str:
    """``str(value)`` in English: for text that is stored, not shown."""
    with speaking("en"):
        return str(value)


class Text:
    """An English template and its named parameters, translated when shown.

    ``str()`` looks the template up in the current language and then fills in
    the parameters with ``str.format``; a parameter that is itself a ``Text``
    is rendered first, in the same language.  Templates are whole sentences
    given as literals, so ``pybabel extract -k Text`` finds them.
    """

    __slots__ = ("params", "template")

    def __init__(self, template: str, /, **params: object) -> None:
        self.template = template
        self.params = params

    def __str__(self) -> str:
        values = {
            name: str(value) if isinstance(value, Text) else value
            for name, value in self.params.items()
        }
        return _(self.template).format(**values)

    def __repr__(self) -> str:
        params = "".join(f", {name}={value!r}" for name, value in self.params.items())
        return f"Text({self.template!r}{params})"
