"""Canonical entity keys: the same real-world identifier gives one key, unsafe values give none. No Kafka."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, strategies as st

from consumers.normalize import (
    NORMALISERS, PLACEHOLDERS, EntityKey, entity_keys, normalize_identifier, organization_canonical_name,
)
from schemas.codec import parse_event
from schemas.models import IdentifierScheme
from tests.factories import PLANNED_RAID, event_dict, make_event

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
SEPARATORS = st.sampled_from(["", "", " ", "-", "."])
# Area codes in service (libphonenumber checks them), with any exchange and line.
AREA_CODES = ("202", "210", "212", "305", "312", "415", "505", "520", "575", "602", "619", "713", "760", "858", "915",
              "928", "956")
NANP_NUMBERS = st.builds(lambda area, rest: area + rest, st.sampled_from(AREA_CODES),
                         st.from_regex(r"[2-9][0-9]{2}[0-9]{4}", fullmatch=True)).filter(
    lambda number: len(set(number[3:])) > 1)  # one repeated digit is filler, not a line
VINS = st.text(VIN_ALPHABET, min_size=17, max_size=17)
PLATES = st.text("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=2, max_size=8)
PLATE_ISSUERS = st.sampled_from(["CA", "AZ", "NM", "TX", "BC", "SON"])
BIRTH_DATES = st.dates(min_value=date(1920, 1, 1), max_value=date(2010, 12, 31))


def key(scheme: str, value: str, issuer: str | None = None) -> str | None:
    found = normalize_identifier(scheme, value, issuer)
    return None if found is None else str(found)


@st.composite
def reformatted(draw: st.DrawFn, text: str) -> str:
    """``text`` as a clerk might type it: random case and a separator between any two characters."""
    return "".join(draw(SEPARATORS) + draw(st.sampled_from([c.lower(), c.upper()])) for c in text).strip(" -.")


# -- the key itself ------------------------------------------------------------------------------
def test_entity_key_is_scheme_colon_value_and_orders_by_scheme_then_value():
    assert str(EntityKey("VIN", "1M8GDM9AXKP042788")) == "VIN:1M8GDM9AXKP042788"
    assert sorted([EntityKey("VIN", "B"), EntityKey("IMEI", "Z"), EntityKey("VIN", "A")]) == [
        EntityKey("IMEI", "Z"), EntityKey("VIN", "A"), EntityKey("VIN", "B")]


def test_every_contract_scheme_has_a_normaliser():
    assert set(NORMALISERS) == set(IdentifierScheme)


def test_a_scheme_the_contract_does_not_define_is_an_error():
    with pytest.raises(ValueError):
        normalize_identifier("SHOE_SIZE", "11")


# -- phones --------------------------------------------------------------------------------------
@pytest.mark.parametrize("written", [
    "(619) 555-0142", "619.555.0142", "+1 619 555 0142", "001 619 555 0142", "1-619-555-0142",
    "6195550142", "+16195550142", "619-555-0142 ext. 12", "(619) 555-0142 x3",
])
def test_us_phone_formats_give_one_e164_key(written):
    assert key("PHONE_E164", written) == "PHONE_E164:+16195550142"


@pytest.mark.parametrize("written", [
    "+52 664 123 4567", "+52 1 664 123 4567", "0052 664 123 4567", "011 52 664 123 4567", "526641234567",
])
def test_mexican_numbers_keep_their_country_code(written):
    assert key("PHONE_E164", written) == "PHONE_E164:+526641234567"


@pytest.mark.parametrize("written", [
    "555-0142",          # 7-digit local number: area code unknown
    "+1 555 0142",       # fewer than 8 digits
    "+1 000 000 0000",   # not a NANP number
    "(119) 555-0142",    # NANP area codes never start with 0 or 1
    "55501420",          # bare 8 digits: neither NANP nor E.164
    "999-999-9999", "(619) 000-0000", "+52 664 999 9999",  # filler subscriber numbers
])
def test_partial_or_impossible_phones_give_no_key(written):
    assert normalize_identifier("PHONE_E164", written) is None


@given(NANP_NUMBERS, st.data())
def test_phone_formatting_variants_share_a_key(national, data):
    a, b, c = national[:3], national[3:6], national[6:]
    variants = [f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"001 {a} {b} {c}", f"1-{a}-{b}-{c}",
                data.draw(reformatted(national))]
    assert {key("PHONE_E164", v) for v in variants} == {f"PHONE_E164:+1{national}"}


@given(NANP_NUMBERS, NANP_NUMBERS)
def test_different_phones_give_different_keys(first, second):
    assert (key("PHONE_E164", first) == key("PHONE_E164", second)) == (first == second)


# -- vehicles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("written", [
    "1M8GDM9AXKP042788", "1m8gdm9axkp042788", "1M8-GDM9AX-KP042788", "1M8 GDM9AX KP 042788",
    "1M8GDM9AXKPO42788", "1M8GDM9AXKPQ42788",  # a letter O or Q misread for 0
])
def test_vin_variants_give_one_key(written):
    assert key("VIN", written) == "VIN:1M8GDM9AXKP042788"


@pytest.mark.parametrize("written", ["1M8GDM9AXKP04278", "1M8GDM9AXKP0427881", "00000000000000000"])
def test_vin_of_wrong_length_or_placeholder_gives_no_key(written):
    assert normalize_identifier("VIN", written) is None


@given(VINS, st.data())
def test_vin_formatting_and_lookalike_letters_share_a_key(vin, data):
    misread = vin.replace("0", data.draw(st.sampled_from(["0", "O", "Q"]))).replace(
        "1", data.draw(st.sampled_from(["1", "I"])))
    assert key("VIN", data.draw(reformatted(misread))) == key("VIN", vin)


@given(VINS, VINS)
def test_different_vins_give_different_keys(first, second):
    keys = normalize_identifier("VIN", first), normalize_identifier("VIN", second)
    if None not in keys:
        assert (keys[0] == keys[1]) == (first == second)


@pytest.mark.parametrize(("written", "issuer"), [
    ("8ABC123", "CA"), ("8 abc-123", "ca"), ("8.ABC.123", " Ca "), ("CA/8ABC123", None), ("CA/8ABC123", "CA"),
])
def test_plate_variants_give_one_key_qualified_by_issuer(written, issuer):
    assert key("LICENSE_PLATE", written, issuer) == "LICENSE_PLATE:CA/8ABC123"


def test_plate_without_issuer_gives_no_key_and_issuers_keep_plates_apart():
    assert normalize_identifier("LICENSE_PLATE", "8ABC123") is None
    assert normalize_identifier("LICENSE_PLATE", "8ABC123", "UNKNOWN") is None
    assert key("LICENSE_PLATE", "8ABC123", "CA") != key("LICENSE_PLATE", "8ABC123", "AZ")


@given(PLATES, PLATE_ISSUERS, st.data())
def test_plate_formatting_variants_share_a_key(plate, issuer, data):
    assert (key("LICENSE_PLATE", data.draw(reformatted(plate)), issuer.lower())
            == key("LICENSE_PLATE", plate, issuer))


# -- people --------------------------------------------------------------------------------------
@pytest.mark.parametrize("written", [
    "GARCIA LOPEZ, JUAN CARLOS|1988-04-12", "Garcia-Lopez, Juan|1988-04-12", "García López, Juan Carlos|1988-04-12",
    "garcia lopez,juan c.|1988-04-12", "  Garcia  Lopez ,  Juan | 1988-04-12 ", "Garcia Lopez Jr., Juan|1988-04-12",
])
def test_name_variants_give_one_key(written):
    assert key("PERSON_NAME_DOB", written) == "PERSON_NAME_DOB:GARCIALOPEZ,JUAN|1988-04-12"


def test_apostrophes_join_and_accents_fold():
    assert key("PERSON_NAME_DOB", "O’Brien, Seán|1975-01-30") == "PERSON_NAME_DOB:OBRIEN,SEAN|1975-01-30"
    assert key("PERSON_NAME_DOB", "Núñez, José|1990-07-01") == key("PERSON_NAME_DOB", "NUNEZ, JOSE|1990-07-01")


@pytest.mark.parametrize("written", [
    "GARCIA LOPEZ, JUAN",                 # a name alone is not safe to match on
    "GARCIA LOPEZ, JUAN|",
    "GARCIA LOPEZ, JUAN|1988-02-30",      # no such day
    "GARCIA LOPEZ, JUAN|1900-01-01",      # records-system filler for "unknown"
    "JUAN GARCIA LOPEZ|1988-04-12",       # no comma: which part is the surname?
    "GARCIA LOPEZ, |1988-04-12",
    "Doe, John|1980-01-01", "DOE, JANE Q|1980-01-01", "UNKNOWN, JUAN|1988-04-12", "GARCIA, FNU|1988-04-12",
])
def test_names_unsafe_to_match_give_no_key(written):
    assert normalize_identifier("PERSON_NAME_DOB", written) is None


NAME_VARIANTS = st.sampled_from([
    ("García López", "Juan Carlos", "GARCIA-LOPEZ", "juan"),
    ("Núñez", "María José", "nunez", "MARIA-JOSE"),
    ("O'Brien", "Seán Patrick", "OBRIEN", "Sean P."),
])


@given(NAME_VARIANTS, BIRTH_DATES)
def test_name_formatting_variants_share_a_key(names, born):
    surname, given_names, other_surname, other_given = names
    assert (key("PERSON_NAME_DOB", f"{surname}, {given_names}|{born}")
            == key("PERSON_NAME_DOB", f"{other_surname},{other_given}|{born.isoformat()}"))


@given(BIRTH_DATES, BIRTH_DATES)
def test_same_name_different_birth_dates_give_different_keys(first, second):
    keys = {key("PERSON_NAME_DOB", f"Garcia, Juan|{born}") for born in (first, second)}
    assert len(keys) == (1 if first == second else 2)


# -- addresses and organizations -----------------------------------------------------------------
@pytest.mark.parametrize("written", [
    "123 North Main Street, Apartment 4", "123 N Main St #4", "123 n. main st. unit 4", "123 North Main St Apt. #4",
    "123  N.  MAIN  STREET  STE 4",
])
def test_address_variants_give_one_key(written):
    assert key("STREET_ADDRESS", written) == "STREET_ADDRESS:123 N MAIN ST UNIT 4"


@pytest.mark.parametrize("written", [
    "4500 W Camino de la Plaza, San Ysidro, CA 92173-3011", "4500 W Camino de la Plaza, San Ysidro, CA 92173",
    "4500 West Camino de la Plaza, San Ysidro, California", "4500 W. CAMINO DE LA PLAZA, SAN YSIDRO, CALIFORNIA 92173",
    "4500 W Camino de la Plaza, San Ysidro, CA",
])
def test_the_zip_and_the_way_the_state_is_written_do_not_change_an_address_key(written):
    assert key("STREET_ADDRESS", written) == "STREET_ADDRESS:4500 W CAMINO DE LA PLAZA SAN YSIDRO CA"


def test_us_birth_dates_give_the_iso_key():
    assert key("PERSON_NAME_DOB", "Garcia Lopez, Juan|04/12/1988") == key("PERSON_NAME_DOB", "GARCIA LOPEZ, JUAN|1988-04-12")


@pytest.mark.parametrize(("written", "issuer"), [("8ABC123", "California"), ("8ABC123", "CALIFORNIA"),
                                                 ("8ABC123", "ca")])
def test_a_plate_issuer_written_as_a_state_name_is_its_code(written, issuer):
    assert key("LICENSE_PLATE", written, issuer) == "LICENSE_PLATE:CA/8ABC123"


@pytest.mark.parametrize("written", ["S/N 4471-A", "s/n: 4471A", "SN-4471A", "Serial # 4471-A", "Serial No. 4471A",
                                     "4471A"])
def test_serial_prefixes_are_not_part_of_the_serial(written):
    assert key("PILL_PRESS_SERIAL", written) == "PILL_PRESS_SERIAL:4471A"


@pytest.mark.parametrize("written", ["UNKNOWN", "N/A", "Main Street", "Rancho El Sauz"])
def test_address_without_a_house_number_gives_no_key(written):
    assert normalize_identifier("STREET_ADDRESS", written) is None


@pytest.mark.parametrize(("alias", "canonical"), [
    ("Sinaloa Cartel", "SINALOA CARTEL"), ("Cártel de Sinaloa", "SINALOA CARTEL"), ("CDS", "SINALOA CARTEL"),
    ("Pacific Cartel", "SINALOA CARTEL"), ("Guzmán-Loera Organization", "SINALOA CARTEL"),
    ("La Federación", "SINALOA CARTEL"), ("the Federation", "SINALOA CARTEL"),
    ("Jalisco New Generation Cartel", "JALISCO NEW GENERATION CARTEL"),
    ("Cártel de Jalisco Nueva Generación", "JALISCO NEW GENERATION CARTEL"),
    ("C.J.N.G.", "JALISCO NEW GENERATION CARTEL"),
    ("Cártel del Golfo", "GULF CARTEL"), ("CDG", "GULF CARTEL"),
    ("La Línea", "JUAREZ CARTEL"), ("Vicente Carrillo Fuentes Organization", "JUAREZ CARTEL"),
    ("Beltrán-Leyva Organization", "BELTRAN LEYVA ORGANIZATION"), ("BLO", "BELTRAN LEYVA ORGANIZATION"),
])
def test_known_organization_aliases_share_a_canonical_name(alias, canonical):
    assert organization_canonical_name(alias) == canonical
    assert key("ORGANIZATION_NAME", alias) == f"ORGANIZATION_NAME:{canonical}"


@pytest.mark.parametrize(("name", "cleaned"), [
    ("Los Zetas D.T.O.", "LOS ZETAS DTO"), ("Cártel del Noreste", "CARTEL DEL NORESTE"),
    ("Hernández-Ruiz Organization", "HERNANDEZ RUIZ ORGANIZATION"), ("The Chapitos", "THE CHAPITOS"),
])
def test_unknown_organizations_are_cleaned_but_keep_their_suffixes(name, cleaned):
    assert organization_canonical_name(name) == cleaned


# -- serial-like numbers -------------------------------------------------------------------------
@pytest.mark.parametrize(("scheme", "written", "issuer", "expected"), [
    ("PILL_PRESS_SERIAL", "tdp-5 / 00123", None, "TDP500123"),
    ("FIREARM_SERIAL", "ABC.123-45", None, "ABC12345"),
    ("FBI_NUMBER", "123 456 AB7", None, "123456AB7"),
    ("DOCUMENT_NUMBER", "d1234-567", "CA DMV", "D1234567"),
    ("PASSPORT", "g-1234 5678", "mex", "MEX/G12345678"),
    ("PASSPORT", "MEX/G12345678", None, "MEX/G12345678"),
    ("PASSPORT", "G12345678", None, "G12345678"),
    ("ACCOUNT_NUMBER", "0012-3456-789", "BBVA Mexico", "BBVAMEXICO/00123456789"),
    ("IMEI", "35-209900-176148-1", None, "352099001761481"),
])
def test_serial_like_numbers_lose_their_formatting(scheme, written, issuer, expected):
    assert key(scheme, written, issuer) == f"{scheme}:{expected}"


@pytest.mark.parametrize(("scheme", "written"), [
    ("PILL_PRESS_SERIAL", "A-12"), ("FIREARM_SERIAL", "obliterated"), ("FIREARM_SERIAL", "Defaced"),
    ("IMEI", "35209900176148"), ("IMEI", "3520990017614812"), ("PASSPORT", "MEX/123"),
])
def test_short_or_filler_serials_give_no_key(scheme, written):
    assert normalize_identifier(scheme, written) is None


SERIALS = st.text("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=4, max_size=12)


@given(st.sampled_from(["PILL_PRESS_SERIAL", "FIREARM_SERIAL", "DOCUMENT_NUMBER", "FBI_NUMBER"]),
       SERIALS, SERIALS)
def test_different_serials_give_different_keys(scheme, first, second):
    keys = normalize_identifier(scheme, first), normalize_identifier(scheme, second)
    if None not in keys:
        assert (keys[0] == keys[1]) == (first == second)


# -- properties over every scheme ----------------------------------------------------------------
@given(st.sampled_from(list(IdentifierScheme)), st.text(max_size=40),
       st.one_of(st.none(), st.text(max_size=6), PLATE_ISSUERS))
def test_normalising_is_idempotent(scheme, value, issuer):
    first = normalize_identifier(scheme, value, issuer)
    if first is not None:
        assert normalize_identifier(first.scheme, first.value) == first
        assert normalize_identifier(first.scheme, first.value, issuer) == first


@given(st.sampled_from(list(IdentifierScheme)), st.sampled_from(sorted(PLACEHOLDERS | {"N/A", "n.a.", "Unknown"})),
       st.integers(min_value=3, max_value=20), st.sampled_from(["0", "9", "X"]))
def test_placeholders_give_no_key(scheme, filler, length, repeated):
    assert normalize_identifier(scheme, filler, "CA") is None
    assert normalize_identifier(scheme, repeated * length, "CA") is None
    assert normalize_identifier(scheme, "") is None


# -- keys of a whole event -----------------------------------------------------------------------
def test_entity_keys_of_a_seizure_hold_its_vin_plate_and_phone():
    assert [str(k) for k in entity_keys(make_event())] == [
        "LICENSE_PLATE:CA/8ABC123", "PHONE_E164:+16195550142", "VIN:1M8GDM9AXKP042788"]


def test_entity_keys_include_seized_pill_press_serials_deduplicated_and_sorted():
    data = event_dict(payload__pill_presses=[
        {"serial_number": "tdp-5 00123", "manufacturer": "TDP"},
        {"serial_number": "TDP500123"},
        {"serial_number": None, "manufacturer": "Unmarked"},
    ])
    data["entities"].append({"kind": "PHONE", "role": "ASSOCIATE",
                             "identifiers": [{"scheme": "PHONE_E164", "value": "+16195550142"},
                                             {"scheme": "IMEI", "value": "UNKNOWN"}]})
    keys = entity_keys(parse_event(data))
    assert keys == sorted(set(keys))
    assert EntityKey("PILL_PRESS_SERIAL", "TDP500123") in keys
    assert [str(k) for k in keys].count("PHONE_E164:+16195550142") == 1
    assert not any(k.scheme == "IMEI" for k in keys)


def test_entity_keys_leave_out_the_officers_own_contact_details():
    keys = entity_keys(make_event(PLANNED_RAID))
    assert EntityKey("PHONE_E164", "+16195550199") not in keys
    assert EntityKey("PHONE_E164", "+16195550142") in keys
