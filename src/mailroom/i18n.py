"""English and Japanese: message catalogs compiled with Babel, read by gettext.

The language comes from ``MAILROOM_LANG``, else ``LANGUAGE``/``LC_ALL``/``LANG``;
English is the fallback.  Catalogs live in ``mailroom/locale``.
"""

from __future__ import annotations

import gettext
import os
from functools import lru_cache
from pathlib import Path

LOCALE_DIR = Path(__file__).with_name("locale")
SUPPORTED = ("en", "ja")


def language() -> str:
    for variable in ("MAILROOM_LANG", "LANGUAGE", "LC_ALL", "LANG"):
        value = os.environ.get(variable, "")
        code = value.split(":")[0].split(".")[0].split("_")[0].lower()
        if code in SUPPORTED:
            return code
    return "en"


@lru_cache(maxsize=4)
def _translations(lang: str) -> gettext.NullTranslations:
    return gettext.translation(
        "mailroom", localedir=LOCALE_DIR, languages=[lang], fallback=True
    )


def _(message: str) -> str:
    """The message in the user's language."""
    return _translations(language()).gettext(message)
