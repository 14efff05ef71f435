"""Reference data the contract validates against: Southwest Border ports of entry and US state codes.

Port codes are the hub's own stable slugs (not CBP's numeric codes). Coordinates are approximate crossing
locations; county FIPS codes are those of the county the crossing is in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortOfEntry:
    code: str
    name: str
    state: str
    county_fips: str
    latitude: float
    longitude: float
    field_office: str  # CBP OFO field office whose area the port is in


PORTS_OF_ENTRY: dict[str, PortOfEntry] = {
    p.code: p
    for p in [
        PortOfEntry("SAN_YSIDRO", "San Ysidro", "CA", "06073", 32.5422, -117.0293, "SAN_DIEGO"),
        PortOfEntry("OTAY_MESA", "Otay Mesa", "CA", "06073", 32.5530, -116.9380, "SAN_DIEGO"),
        PortOfEntry("TECATE", "Tecate", "CA", "06073", 32.5769, -116.6275, "SAN_DIEGO"),
        PortOfEntry("CALEXICO", "Calexico", "CA", "06025", 32.6653, -115.4989, "SAN_DIEGO"),
        PortOfEntry("ANDRADE", "Andrade", "CA", "06025", 32.7186, -114.7283, "SAN_DIEGO"),
        PortOfEntry("SAN_LUIS", "San Luis", "AZ", "04027", 32.4856, -114.7822, "TUCSON"),
        PortOfEntry("LUKEVILLE", "Lukeville", "AZ", "04019", 31.8806, -112.8164, "TUCSON"),
        PortOfEntry("SASABE", "Sasabe", "AZ", "04019", 31.4828, -111.5436, "TUCSON"),
        PortOfEntry("NOGALES_DECONCINI", "Nogales (DeConcini)", "AZ", "04023", 31.3325, -110.9406, "TUCSON"),
        PortOfEntry("NOGALES_MARIPOSA", "Nogales (Mariposa)", "AZ", "04023", 31.3361, -110.9714, "TUCSON"),
        PortOfEntry("NACO", "Naco", "AZ", "04003", 31.3347, -109.9483, "TUCSON"),
        PortOfEntry("DOUGLAS", "Douglas", "AZ", "04003", 31.3342, -109.5603, "TUCSON"),
        PortOfEntry("COLUMBUS", "Columbus", "NM", "35029", 31.7839, -107.6369, "EL_PASO"),
        PortOfEntry("SANTA_TERESA", "Santa Teresa", "NM", "35013", 31.7836, -106.6794, "EL_PASO"),
        PortOfEntry("ANTELOPE_WELLS", "Antelope Wells", "NM", "35023", 31.3339, -108.5297, "EL_PASO"),
        PortOfEntry("EL_PASO", "El Paso", "TX", "48141", 31.7640, -106.4510, "EL_PASO"),
        PortOfEntry("PRESIDIO", "Presidio", "TX", "48377", 29.5603, -104.3953, "EL_PASO"),
        PortOfEntry("DEL_RIO", "Del Rio", "TX", "48465", 29.3269, -100.9286, "LAREDO"),
        PortOfEntry("EAGLE_PASS", "Eagle Pass", "TX", "48323", 28.7086, -100.5106, "LAREDO"),
        PortOfEntry("LAREDO_WORLD_TRADE_BRIDGE", "Laredo (World Trade Bridge)", "TX", "48479", 27.5997, -99.5339, "LAREDO"),
        PortOfEntry("LAREDO_COLOMBIA_SOLIDARITY", "Laredo (Colombia Solidarity)", "TX", "48479", 27.6958, -99.7478, "LAREDO"),
        PortOfEntry("ROMA", "Roma", "TX", "48427", 26.4053, -99.0175, "LAREDO"),
        PortOfEntry("RIO_GRANDE_CITY", "Rio Grande City", "TX", "48427", 26.3681, -98.8044, "LAREDO"),
        PortOfEntry("PHARR", "Pharr", "TX", "48215", 26.0694, -98.2053, "LAREDO"),
        PortOfEntry("HIDALGO", "Hidalgo", "TX", "48215", 26.0958, -98.2669, "LAREDO"),
        PortOfEntry("PROGRESO", "Progreso", "TX", "48215", 26.0619, -97.9508, "LAREDO"),
        PortOfEntry("BROWNSVILLE", "Brownsville", "TX", "48061", 25.8969, -97.4969, "LAREDO"),
    ]
}

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
    "OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP".split()
)
