"""Canonical entity keys for target deconfliction.

Target deconfliction warns when two agencies' records touch the same person, vehicle, phone, address,
organization or pill press. Agencies write the same identifier differently ("(619) 555-0142" and
"+1 619 555 0142"), so records only meet if each identifier is first reduced to one canonical form.
A wrong match is worse than a missed one (it points two agencies at each other over nothing), so a value too
vague to match on safely -- a placeholder, a partial number, a name without a date of birth -- gives no key.

Everything here is pure: no Kafka, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from schemas.formats import e164, iso_date, usps_state
from schemas.models import CaseEvent, IdentifierScheme, ItemSeizure

# Stand-ins records systems store for "no value"; as keys they would match every record with the same filler.
PLACEHOLDERS = frozenset({
    "UNKNOWN", "UNK", "UNKN", "NA", "NONE", "NULL", "NIL", "TBD", "REDACTED", "REFUSED",
    "NOTAVAILABLE", "NOTAPPLICABLE", "NOTPROVIDED", "NOPLATE", "NOTAG", "NOSERIAL",
    "OBLITERATED", "DEFACED",           # firearm serials that were ground off
    "NFN", "FNU", "NLN", "LNU",         # NCIC-style "no/unknown first/last name"
})
ANONYMOUS_NAMES = frozenset({("DOE", "JOHN"), ("DOE", "JANE")})
GENERATIONAL_SUFFIXES = frozenset({"JR", "SR", "II", "III", "IV"})
# Many records systems store 1900-01-01 when the birth date is unknown.
UNKNOWN_BIRTH_DATE = date(1900, 1, 1)

MIN_SERIAL_LENGTH = 4
VIN_LENGTH = 17
IMEI_LENGTH = 15
SUBSCRIBER_DIGITS = 7
ISSUER_SEPARATOR = "/"
# I, O and Q never appear in a VIN (ISO 3779), so where they do they are misread 1s and 0s.
VIN_LOOKALIKES = str.maketrans({"I": "1", "O": "0", "Q": "0"})

PHONE_EXTENSION = re.compile(r"ext|x|#", re.IGNORECASE)
TRAILING_ZIP = re.compile(r"[ ,]+[0-9]{5}(-[0-9]{4})?$")
# What people write before a serial number: "S/N 4471", "SN: 4471", "Serial # 4471", "No. 4471".
SERIAL_PREFIX = re.compile(r"^\s*(S\s*/\s*N|SN|SERIAL(\s*(NO|NUMBER))?|NO)\b[\s.:#-]*", re.IGNORECASE)
# Agency or component names written before a records system's name ("CBP SEACATS" is SEACATS).
SYSTEM_OWNERS = frozenset({"CBP", "OFO", "USBP", "HSI", "ICE", "DEA", "FBI", "ATF", "DPS", "CHP", "USCG"})
REPEATED_UNIT = re.compile(r"\bUNIT( UNIT)+\b")

# USPS Publication 28 abbreviations; every secondary-unit designator becomes UNIT, since "Apt 4", "Unit 4"
# and "#4" at one street address are one place.
STREET_ABBREVIATIONS = {
    "STREET": "ST", "AVENUE": "AVE", "AV": "AVE", "ROAD": "RD", "BOULEVARD": "BLVD", "DRIVE": "DR",
    "LANE": "LN", "COURT": "CT", "HIGHWAY": "HWY", "PLACE": "PL", "PARKWAY": "PKWY", "CIRCLE": "CIR",
    "TERRACE": "TER", "TRAIL": "TRL",
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W",
    "NORTHEAST": "NE", "NORTHWEST": "NW", "SOUTHEAST": "SE", "SOUTHWEST": "SW",
    "APARTMENT": "UNIT", "APT": "UNIT", "SUITE": "UNIT", "STE": "UNIT",
}

# Widely published names of the major Mexican trafficking organizations (as used in DEA and DOJ releases).
# Factions and successor groups (Los Chapitos, Cartel del Noreste) are deliberately not merged.
KNOWN_ORGANIZATIONS: dict[str, tuple[str, ...]] = {
    "SINALOA CARTEL": (
        "Cártel de Sinaloa", "CDS", "Sinaloa Federation", "Federation", "La Federación", "Pacific Cartel",
        "Cártel del Pacífico", "Guzmán-Loera Organization", "Guzmán-Loera DTO",
    ),
    "JALISCO NEW GENERATION CARTEL": (
        "Cártel de Jalisco Nueva Generación", "Cártel Jalisco Nueva Generación", "CJNG",
    ),
    "GULF CARTEL": ("Cártel del Golfo", "CDG"),
    "JUAREZ CARTEL": (
        "Cártel de Juárez", "La Línea", "Vicente Carrillo Fuentes Organization", "VCFO",
        "Carrillo Fuentes Organization",
    ),
    "BELTRAN LEYVA ORGANIZATION": ("BLO", "Beltrán-Leyva Cartel", "Cártel de los Beltrán Leyva"),
}


@dataclass(frozen=True, order=True)
class EntityKey:
    """One real-world entity as the hub matches it; ``str(key)`` is the Kafka record key."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"


# -- text helpers shared by several schemes ---------------------------------------------------------
def _ascii_upper(text: str) -> str:
    """Upper-case ASCII with accents dropped, so "García" and "GARCIA" compare equal; other non-ASCII is a space."""
    decomposed = unicodedata.normalize("NFKD", text)
    unaccented = "".join(c for c in decomposed if not unicodedata.combining(c)).upper().replace("\u2019", "'")
    return re.sub(r"[^\x00-\x7f]", " ", unaccented)


def _alphanumerics(text: str) -> str:
    """Only A-Z and 0-9: spaces, hyphens, dots and slashes are formatting, never part of a number."""
    return re.sub(r"[^A-Z0-9]", "", _ascii_upper(text))


def _words(text: str) -> list[str]:
    """Upper-case ASCII words: dots and apostrophes join ("N.W." -> NW, "O'Brien" -> OBRIEN), other marks split."""
    return re.findall(r"[A-Z0-9]+", re.sub(r"[.']", "", _ascii_upper(text)))


def _is_placeholder(text: str) -> bool:
    """Empty, a known filler word, or one character repeated ("0000000", "XXXX"): nothing safe to match on."""
    significant = _alphanumerics(text)
    return (not significant or significant in PLACEHOLDERS
            or (len(significant) >= 3 and len(set(significant)) == 1))


def _split_issuer(value: str, issuer: str | None) -> tuple[str | None, str]:
    """The canonical issuer and the bare number.

    A canonical value carries its issuer as "<ISSUER>/<NUMBER>"; reading that form back (with no issuer, or
    the same one) keeps normalisation idempotent. A placeholder issuer counts as none.
    """
    prefix, separator, rest = value.partition(ISSUER_SEPARATOR)
    if separator and (not issuer or _alphanumerics(prefix) == _alphanumerics(issuer)):
        issuer, value = prefix, rest
    canonical_issuer = _alphanumerics(issuer or "")
    return (None if _is_placeholder(canonical_issuer) else canonical_issuer), value


# -- one normaliser per scheme: (value, issuer) -> canonical value or None ---------------------------
def _phone(value: str, issuer: str | None) -> str | None:
    """E.164 ("+16195550142"), read by ``phonenumbers`` (:func:`schemas.formats.e164`); an extension is dropped (it
    reaches the same line). A subscriber part of one repeated digit ("000-0000", "999-9999") is filler, not a
    line, and a number that is not whole (no area code) is not safe to match."""
    number = PHONE_EXTENSION.split(value, maxsplit=1)[0]
    try:
        canonical = e164(number)
    except ValueError:
        return None
    return None if _is_placeholder(canonical[-SUBSCRIBER_DIGITS:]) else canonical


def _vin(value: str, issuer: str | None) -> str | None:
    """17 characters, I/O/Q read as 1/0/0. The check digit is the contract's job at ingest, not repeated here."""
    vin = _alphanumerics(value).translate(VIN_LOOKALIKES)
    return vin if len(vin) == VIN_LENGTH and not _is_placeholder(vin) else None


def _license_plate(value: str, issuer: str | None) -> str | None:
    """Issuer/plate ("CA/8ABC123"): the same characters in two states are two vehicles, so no issuer, no key. A US
    state written by name is its USPS code ("California" -> CA)."""
    state, plate_text = _split_issuer(value, issuer and (usps_state(issuer) or issuer))
    plate = _alphanumerics(plate_text)
    return f"{state}/{plate}" if state and not _is_placeholder(plate) else None


def _date_of_birth(text: str) -> str | None:
    """An ISO (or US, MM/DD/YYYY) date after the 1900-01-01 filler, or None."""
    try:
        born = date.fromisoformat(iso_date(text))
    except ValueError:
        return None
    return born.isoformat() if born > UNKNOWN_BIRTH_DATE else None


def _person_name_dob(value: str, issuer: str | None) -> str | None:
    """Surname, first given name and birth date ("GARCIALOPEZ,JUAN|1988-04-12") from "Last, First Middle|YYYY-MM-DD".

    Surname words are joined, so "García López" and "Garcia-Lopez" match; generational suffixes (Jr, III)
    are dropped. Only the first given name is kept, because middle names are recorded inconsistently.
    A name alone is not safe to match on, so a birth date is required, and "John/Jane Doe" gives no key.
    """
    name, separator, birth = value.rpartition("|")
    born = _date_of_birth(birth)
    surname_text, comma, given_text = name.partition(",")
    if not separator or born is None or not comma:
        return None
    surname_words = _words(surname_text)
    while len(surname_words) > 1 and surname_words[-1] in GENERATIONAL_SUFFIXES:
        surname_words.pop()
    surname, given_names = "".join(surname_words), _words(given_text)
    if not given_names or _is_placeholder(surname) or _is_placeholder(given_names[0]):
        return None
    if (surname, given_names[0]) in ANONYMOUS_NAMES:
        return None
    return f"{surname},{given_names[0]}|{born}"


def _street_address(value: str, issuer: str | None) -> str | None:
    """USPS-style: upper case, punctuation gone, suffixes and directionals abbreviated, one UNIT designator, the
    state as its USPS code ("TEXAS" -> TX) and no ZIP (many records leave it out; street, number, town and state
    name the place without it). Without a house number an address names a whole street, so it needs a digit and a
    letter.
    """
    text = TRAILING_ZIP.sub("", value.strip()).replace("#", " UNIT ")
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 1 and usps_state(parts[-1]):
        parts[-1] = usps_state(parts[-1]) or parts[-1]
    words = " ".join(STREET_ABBREVIATIONS.get(word, word) for word in _words(" ".join(parts)))
    address = REPEATED_UNIT.sub("UNIT", words)
    if _is_placeholder(address) or not re.search(r"[0-9]", address) or not re.search(r"[A-Z]", address):
        return None
    return address


def _cleaned_organization_name(name: str) -> str:
    return " ".join(_words(name))


_ORGANIZATION_ALIASES = {
    _cleaned_organization_name(alias): canonical
    for canonical, aliases in KNOWN_ORGANIZATIONS.items()
    for alias in (canonical, *aliases)
}


def organization_canonical_name(name: str) -> str:
    """The organization's canonical name: known aliases (also after a leading "The") map to one name.

    Unknown names are only cleaned (upper-case ASCII, punctuation removed); words like DTO, CARTEL and
    ORGANIZATION are kept, because stripping them would merge distinct groups.
    """
    cleaned = _cleaned_organization_name(name)
    return (_ORGANIZATION_ALIASES.get(cleaned) or _ORGANIZATION_ALIASES.get(cleaned.removeprefix("THE "))
            or cleaned)


def _organization(value: str, issuer: str | None) -> str | None:
    name = organization_canonical_name(value)
    return None if _is_placeholder(name) else name


def _serial(value: str, issuer: str | None) -> str | None:
    """Alphanumerics only, without an "S/N" or "Serial #" in front; fewer than 4 characters would collide across
    unrelated items."""
    serial = _alphanumerics(SERIAL_PREFIX.sub("", value))
    return serial if len(serial) >= MIN_SERIAL_LENGTH and not _is_placeholder(serial) else None


def _issued_serial(value: str, issuer: str | None) -> str | None:
    """Issuer/number when the issuer is known ("MEX/G12345678"): passport and account numbers are unique per issuer."""
    canonical_issuer, number = _split_issuer(value, issuer)
    serial = _serial(number, None)
    if serial is None:
        return None
    return f"{canonical_issuer}{ISSUER_SEPARATOR}{serial}" if canonical_issuer else serial


def _imei(value: str, issuer: str | None) -> str | None:
    """Exactly 15 digits (the full IMEI with its check digit)."""
    digits = re.sub(r"[^0-9]", "", _ascii_upper(value))
    return digits if len(digits) == IMEI_LENGTH and not _is_placeholder(digits) else None


NORMALISERS: dict[IdentifierScheme, Callable[[str, str | None], str | None]] = {
    IdentifierScheme.PHONE_E164: _phone,
    IdentifierScheme.VIN: _vin,
    IdentifierScheme.LICENSE_PLATE: _license_plate,
    IdentifierScheme.PERSON_NAME_DOB: _person_name_dob,
    IdentifierScheme.FBI_NUMBER: _serial,
    IdentifierScheme.PASSPORT: _issued_serial,
    IdentifierScheme.STREET_ADDRESS: _street_address,
    IdentifierScheme.ORGANIZATION_NAME: _organization,
    IdentifierScheme.PILL_PRESS_SERIAL: _serial,
    IdentifierScheme.FIREARM_SERIAL: _serial,
    IdentifierScheme.DOCUMENT_NUMBER: _serial,
    IdentifierScheme.ACCOUNT_NUMBER: _issued_serial,
    IdentifierScheme.IMEI: _imei,
}


# -- public API ------------------------------------------------------------------------------------
def record_number_key(system: str, number: str, ori: str | None = None) -> str:
    """A record number as dedup looks it up: "<ORI>|<SYSTEM>|<NUMBER>", or "*|<SYSTEM>|<NUMBER>" without an ORI.

    People cite records their own way: a SEACATS number with dashes or spaces, the system as "Seacats" or
    "CBP SEACATS". Only letters and digits count, in upper case, and an agency's name before the system's is
    dropped.
    """
    words = _words(system)
    while len(words) > 1 and words[0] in SYSTEM_OWNERS:
        words.pop(0)
    return f"{ori or '*'}|{''.join(words)}|{_alphanumerics(number)}"


def normalize_identifier(scheme: IdentifierScheme | str, value: str, issuer: str | None = None) -> EntityKey | None:
    """The canonical key of one identifier, or None when the value is not safe to match on.

    Raises ValueError for a scheme the contract does not define.
    """
    scheme = IdentifierScheme(scheme)
    canonical = NORMALISERS[scheme](value, issuer)
    return None if canonical is None else EntityKey(scheme.value, canonical)


def entity_keys(event: CaseEvent) -> list[EntityKey]:
    """Every matchable key an event touches, de-duplicated and sorted.

    That is each identifier of each entity, plus the serials of seized pill presses (a pill-press registry
    keys on them). Contact details of the officers themselves (e.g. a planned operation's on-scene contact)
    are not targets and are left out.
    """
    identifiers = [(i.scheme, i.value, i.issuer) for entity in event.entities for i in entity.identifiers]
    if isinstance(event.payload, ItemSeizure):
        identifiers += [(IdentifierScheme.PILL_PRESS_SERIAL, press.serial_number, None)
                        for press in event.payload.pill_presses if press.serial_number]
    keys = {normalize_identifier(*identifier) for identifier in identifiers}
    return sorted(key for key in keys if key is not None)
