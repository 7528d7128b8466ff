"""English and Japanese, read straight from the ``.po`` catalogs with Babel.

The language comes from ``MAILROOM_LANG``, else ``LANGUAGE``/``LC_ALL``/``LANG``;
English is the fallback.  Catalogs live in ``mailroom/locale/<lang>/LC_MESSAGES``.
No compiled ``.mo`` file is kept: a binary in the repository can silently drift
from the ``.po`` it was built from, so the text catalog is the only source.
"""

from __future__ import annotations

import gettext
import os
from functools import lru_cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

DOMAIN = "mailroom"
LOCALE_DIR = Path(__file__).with_name("locale")
SUPPORTED = ("en", "ja")


def language() -> str:
    """The first supported language named by the environment, else English."""
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
