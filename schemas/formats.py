"""The formats agency systems really export, read into the one form the contract stores.

An agency's records system writes a phone as ``(956) 555-0156``, a birth date as ``12/24/1991`` and a state as
``Texas``: all valid values, written another way. The contract reads each into its stored form (E.164, ISO 8601,
the USPS code) and keeps what the agency wrote beside it; a value is refused only when it cannot be read, with
the reason. Phones are read by ``phonenumbers`` (Google's libphonenumber metadata), states by ``us``.
"""

from __future__ import annotations

import re
from datetime import date

import phonenumbers
import us

from schemas.reference import US_STATES

#: Where a number written without a country code is tried, in order: the hub's agencies are US and Mexican.
PHONE_REGIONS = ("US", "MX")
# Mexico dropped the "1" after +52 for mobiles in 2019; records written before still carry it.
_OLD_MEXICAN_MOBILE = re.compile(r"^\+521(\d{10})$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STATE_NAMES = {state.name.upper(): state.abbr for state in [*us.states.STATES_AND_TERRITORIES, us.states.DC]
                if state.abbr in US_STATES}


def e164(text: str) -> str:
    """The E.164 form of a phone number as people write it; ValueError saying why when it is not a number in service.

    A number with a country code (``+``, ``00`` or ``011``) is read as written; one without is read as a US number,
    then as a Mexican one. It must be a valid number of its country by libphonenumber's metadata (an area code that
    exists, the right length): a local fragment or an impossible area code is not a line anyone can call.
    """
    written = text
    digits = re.sub(r"[^0-9+]", "", text)
    old = _OLD_MEXICAN_MOBILE.match(digits)
    if old:
        text = f"+52{old.group(1)}"
    elif digits.startswith("011"):
        text = "+" + digits[3:]
    elif digits.startswith("00"):
        text = "+" + digits[2:]
    regions = PHONE_REGIONS[:1] if text.lstrip().startswith("+") else PHONE_REGIONS
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            break
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise ValueError(f"{written!r} is not a telephone number in service (no area code, or an area code or length "
                     f"no country uses): write it with its area code, e.g. (619) 555-0142 or +16195550142")


def iso_date(text: str) -> str:
    """``YYYY-MM-DD`` from an ISO or a US (``MM/DD/YYYY``) date; ValueError when it is neither, or no such day."""
    text = text.strip()
    us_date = _US_DATE.match(text)
    try:
        if us_date:
            month, day, year = (int(part) for part in us_date.groups())
            return date(year, month, day).isoformat()
        if _ISO_DATE.match(text):
            return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date: {exc}") from None
    raise ValueError(f"{text!r} is not a date: write YYYY-MM-DD (or MM/DD/YYYY)")


def usps_state(text: str) -> str | None:
    """The USPS code of a state or territory written as its code or name, any case ("Texas", "TX", "tx"); None if
    it is neither."""
    cleaned = " ".join(text.split()).upper()
    return cleaned if cleaned in US_STATES else _STATE_NAMES.get(cleaned)


def state_of_county(county_fips: str) -> str | None:
    """The USPS code of the state a county's FIPS code is in (its first two digits are the state's FIPS code)."""
    found = us.states.lookup(county_fips[:2], field="fips")
    return found.abbr if found is not None and found.abbr in US_STATES else None
