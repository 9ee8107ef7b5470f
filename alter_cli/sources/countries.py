"""Country tasks from ISO 3166-1 and ISO 4217 with the iso-codes translations: exonyms and currencies.

Source: the Debian iso-codes databases shipped in PyPI's `pycountry` (LGPL-2.1): ISO 3166-1 (249
countries: alpha-2/alpha-3/numeric codes, English names), ISO 4217 (currencies: alpha-3 code, numeric
code, English name) and their translations as gettext catalogues (``locales/<lang>/LC_MESSAGES/
iso3166-1.mo``). Read at run time from the installed package; nothing of it is copied here.

Two tasks, split by country (the unit: a country and every example built from it lie in one split):

- ``country`` (``generate``): the country's name in another language → its English name
  ("Deutschland" in German → "Germany"). English name = pycountry's ``common_name`` where it has one
  ("South Korea"), else ``name``. A language contributes a country only when its catalogue
  translates it to something other than the English name (an identical name would be a copy task).
- ``currency`` (``generate``): English country name → the English name of its national currency
  (Japan → "Yen"). ISO 4217 has no country field; a national currency's alpha-3 code starts with the
  issuing country's alpha-2 code (JPY: JP) by the standard's construction. Currencies with an ``X``
  code (supranational, metals, testing) are skipped; where several codes start with a country's
  alpha-2 (funds codes such as USN beside USD, BOV beside BOB) the one whose numeric code equals the
  country's ISO 3166 numeric code wins, and a country with no such unique choice is left out of this
  task. Countries using a currency of another code (euro, CFA franc, …) therefore have no
  ``currency`` example.

Functions here are pure except :func:`read_countries`.
"""

from __future__ import annotations

import gettext
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cmu import WordExample

#: language code (pycountry locale) → English language name used in the prompt
LANGUAGE_NAMES: dict[str, str] = {
    "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch", "pt": "Portuguese",
    "sv": "Swedish", "pl": "Polish", "fi": "Finnish", "tr": "Turkish", "cs": "Czech", "da": "Danish",
    "hu": "Hungarian", "ro": "Romanian", "id": "Indonesian",
}
COUNTRY_PROMPT = 'Which country is called "{name}" in {language}? Answer with its English name.'
CURRENCY_PROMPT = "What is the national currency of {country}? Answer with its ISO 4217 name."


class CountrySourceError(ValueError):
    """The ISO databases are missing or unreadable, or an option cannot be met."""


@dataclass(frozen=True)
class Country:
    """One ISO 3166-1 country: codes, English name, names by language, national currency (or None)."""

    alpha_3: str
    alpha_2: str
    numeric: str
    name: str
    translations: dict[str, str] = field(default_factory=dict)
    currency: str | None = None


def national_currency(alpha_2: str, numeric: str, currencies: Sequence[Mapping[str, str]]) -> str | None:
    """English name of the country's national currency by the ISO 4217 code rule (module docstring),
    or None. ``currencies``: ISO 4217 entries with ``alpha_3``, ``numeric``, ``name``."""
    cands = [c for c in currencies if c["alpha_3"][:2] == alpha_2 and not c["alpha_3"].startswith("X")]
    if len(cands) > 1:
        cands = [c for c in cands if c.get("numeric") == numeric]
    return cands[0]["name"] if len(cands) == 1 else None


def read_countries(languages: Sequence[str]) -> tuple[list[Country], str | None]:
    """Countries (sorted by alpha-3) with their names in ``languages`` and national currency, from the
    installed `pycountry` databases and catalogues (the package's data files are read directly;
    importing pycountry is not needed). Returns (countries, pycountry version).
    Raises :class:`CountrySourceError` when pycountry or a language's catalogue is missing."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("pycountry")
    if spec is None or not spec.submodule_search_locations:
        raise CountrySourceError("ISO country data not found: the 'pycountry' package is not installed "
                                 "(pip install pycountry, or make install-demo)")
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        entries = json.loads((root / "databases" / "iso3166-1.json").read_text(encoding="utf-8"))["3166-1"]
        currencies = json.loads((root / "databases" / "iso4217.json").read_text(encoding="utf-8"))["4217"]
    except (OSError, ValueError, KeyError) as exc:
        raise CountrySourceError(f"ISO databases of pycountry unreadable under {root} ({exc.__class__.__name__})") from None
    catalogues = {}
    for lang in languages:
        try:
            catalogues[lang] = gettext.translation("iso3166-1", str(root / "locales"), languages=[lang])
        except OSError:
            raise CountrySourceError(f"pycountry has no iso3166-1 translations for language {lang!r}") from None
    out = []
    for e in entries:
        english = e.get("common_name") or e["name"]
        names = {}
        for lang, cat in catalogues.items():  # a catalogue returns the msgid itself when untranslated
            for msgid in (e.get("common_name"), e["name"]):
                if msgid and cat.gettext(msgid) != msgid:
                    names[lang] = cat.gettext(msgid)
                    break
        out.append(Country(e["alpha_3"], e["alpha_2"], e["numeric"], english, names,
                           national_currency(e["alpha_2"], e["numeric"], currencies)))
    try:
        version = importlib.metadata.version("pycountry")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return sorted(out, key=lambda c: c.alpha_3), version


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def country_examples(countries: Sequence[Country], languages: Sequence[str]) -> list[WordExample]:
    """``country`` examples: per country, per language (in ``languages`` order), where the translated
    name differs from the English one (case- and space-insensitively)."""
    out = []
    for c in countries:
        for lang in languages:
            local = c.translations.get(lang)
            if local and _norm(local) != _norm(c.name):
                out.append(WordExample(COUNTRY_PROMPT.format(name=local, language=LANGUAGE_NAMES[lang]), c.name,
                                       "country", c.alpha_3, lang))
    return out


def currency_examples(countries: Sequence[Country]) -> list[WordExample]:
    """One ``currency`` example per country that has a national currency."""
    return [WordExample(CURRENCY_PROMPT.format(country=c.name), c.currency, "currency", c.alpha_3)
            for c in countries if c.currency]
