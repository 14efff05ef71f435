"""The console's offline base map: the border states' outlines, with no map tiles from the internet.

The outlines ship with the project in ``static/border.json``, made once by :func:`build` from two npm packages:
``us-atlas`` 3.0.1 (``states-10m.json``: US Census cartographic boundaries) and ``world-atlas`` 2.0.2
(``countries-50m.json``: Natural Earth), both ISC-licensed TopoJSON. Regenerate with
``python -m hub.console.basemap US_ATLAS_DIR WORLD_ATLAS_DIR`` (the unpacked ``npm pack`` tarballs).
:func:`project` turns longitude and latitude into the map's SVG coordinates, for outlines and events alike.
"""

from __future__ import annotations

import json
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

BORDER_MAP = Path(__file__).resolve().parent / "static" / "border.json"
#: The region shown: the four border states and northern Mexico (west, south, east, north).
BOUNDS = (-125.0, 24.0, -93.0, 38.5)
WIDTH = 960.0
#: US Census FIPS codes of the border states, and Mexico's ISO 3166 numeric code.
STATES = {"06": "California", "04": "Arizona", "35": "New Mexico", "48": "Texas"}
MEXICO = "484"

Ring = list[tuple[float, float]]


def _arcs(topology: dict[str, Any]) -> list[Ring]:
    """A TopoJSON topology's arcs in longitude/latitude (quantized, delta-encoded positions decoded)."""
    scale, translate = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * scale[0] + translate[0], y * scale[1] + translate[1]))
        arcs.append(points)
    return arcs


def _rings(geometry: dict[str, Any], arcs: list[Ring]) -> list[Ring]:
    """The rings of a Polygon or MultiPolygon geometry (an arc index ~i is arc i reversed)."""
    polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
    rings = []
    for polygon in polygons:
        for ring in polygon:
            points: Ring = []
            for index in ring:
                arc = arcs[index] if index >= 0 else arcs[~index][::-1]
                points.extend(arc if not points else arc[1:])
            rings.append(points)
    return rings


def _within(ring: Ring) -> bool:
    west, south, east, north = BOUNDS
    return any(west <= x <= east and south <= y <= north for x, y in ring)


def build(us_atlas: Path, world_atlas: Path) -> dict[str, list[Ring]]:
    """Outlines by name (the border states, and Mexico clipped to the region), rounded to 0.01 degree."""
    shapes: dict[str, list[Ring]] = {}
    states = json.loads((us_atlas / "states-10m.json").read_text())
    state_arcs = _arcs(states)
    for geometry in states["objects"]["states"]["geometries"]:
        if geometry["id"] in STATES:
            shapes[STATES[geometry["id"]]] = _rings(geometry, state_arcs)
    world = json.loads((world_atlas / "countries-50m.json").read_text())
    world_arcs = _arcs(world)
    mexico = next(g for g in world["objects"]["countries"]["geometries"] if g.get("id") == MEXICO)
    shapes["Mexico"] = [ring for ring in _rings(mexico, world_arcs) if _within(ring)]
    return {name: [[(round(x, 2), round(y, 2)) for x, y in ring] for ring in rings] for name, rings in shapes.items()}


def height() -> float:
    west, south, east, north = BOUNDS
    return WIDTH * (north - south) / ((east - west) * math.cos(math.radians((north + south) / 2)))


def project(longitude: float, latitude: float) -> tuple[float, float]:
    """SVG x, y of a point: an equirectangular projection true to scale at the region's middle latitude."""
    west, south, east, north = BOUNDS
    return (round((longitude - west) / (east - west) * WIDTH, 1),
            round((north - latitude) / (north - south) * height(), 1))


@lru_cache(maxsize=1)
def outlines() -> dict[str, list[str]]:
    """Each outline as SVG path data, one string per ring: read and projected once per process, not per page."""
    shapes = json.loads(BORDER_MAP.read_text())
    return {name: ["M" + " L".join(f"{x},{y}" for x, y in (project(*point) for point in ring)) + " Z"
                   for ring in rings] for name, rings in shapes.items()}


if __name__ == "__main__":
    BORDER_MAP.write_text(json.dumps(build(Path(sys.argv[1]), Path(sys.argv[2])), separators=(",", ":")))
    print(f"wrote {BORDER_MAP} ({BORDER_MAP.stat().st_size:,} bytes)")
