"""What locates an image: GeoTIFF tags and geotransforms, OME-XML pixel sizes, GDAL's nodata."""

from __future__ import annotations

import logging

log = logging.getLogger("bigquant")

#: TIFF tag GDAL keeps an image's nodata value in (ASCII).
GDAL_NODATA = 42113

#: OME-XML length units and their OME-NGFF (UDUNITS-2) names.
_UNITS = {"Å": "angstrom", "nm": "nanometer", "µm": "micrometer", "\u03bcm": "micrometer",
          "um": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter"}  # fmt: skip


def ome_pixel_size(ome_xml: str | None) -> dict | None:
    """``PhysicalSizeY/X`` of the first image of OME-XML, or None where they are missing."""
    import xml.etree.ElementTree as ET

    if not ome_xml:
        return None
    pixels = next((e for e in ET.fromstring(ome_xml).iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None or not {"PhysicalSizeX", "PhysicalSizeY"} <= set(pixels.attrib):
        return None
    units = {pixels.get(f"PhysicalSize{a}Unit", "µm") for a in "XY"}
    if len(units) != 1 or units - set(_UNITS):
        return None  # no one unit OME-NGFF can name for both axes
    return {
        "y": float(pixels.get("PhysicalSizeY")),
        "x": float(pixels.get("PhysicalSizeX")),
        "unit": _UNITS[units.pop()],
    }


#: The TIFF tags that georeference an image (GeoTIFF 1.1: pixel scale, tie points,
#: transformation, GeoKey directory, double and ASCII parameters).
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


def geotiff_tags(page) -> dict | None:
    """The GeoTIFF tags of a TIFF page as ``{code: {"type", "count", "value"}}``, or None.

    Kept verbatim, to be written into outputs as they are (JSON: codes are strings).
    """
    tags = {
        str(code): {
            "type": int(tag.dtype),
            "count": int(tag.count),
            "value": tag.value if isinstance(tag.value, str) else list(tag.value),
        }
        for code in GEOTIFF_TAGS
        if (tag := page.tags.get(code)) is not None
    }
    return tags or None


def georeference(tags: dict | None) -> tuple[str | None, list[float] | None]:
    """The CRS (``"EPSG:32633"``, or the GeoTIFF citation) and GDAL geotransform of GeoTIFF tags.

    The geotransform is ``[x0, dx, rx, y0, ry, dy]``: the world position of
    pixel (row, column) is ``(x0 + column dx + row rx, y0 + column ry + row dy)``.
    """
    if not tags:
        return None, None
    keys = tags.get("34735", {}).get("value", [])
    entries = {keys[i]: keys[i + 1 : i + 4] for i in range(4, len(keys) - 3, 4)}
    crs = None
    for key in (3072, 2048):  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey
        if key in entries and entries[key][0] == 0 and 0 < entries[key][2] < 32767:
            crs = f"EPSG:{entries[key][2]}"
            break
    else:
        if 1026 in entries and entries[1026][0] == 34737 and "34737" in tags:  # citation
            _, count, offset = entries[1026]
            crs = tags["34737"]["value"][offset : offset + count].rstrip("|") or None
    transform = None
    if "34264" in tags:
        m = tags["34264"]["value"]
        transform = [m[3], m[0], m[1], m[7], m[4], m[5]]
    elif "33922" in tags and "33550" in tags:
        i, j, _, x, y, _ = tags["33922"]["value"][:6]
        sx, sy = tags["33550"]["value"][:2]
        transform = [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
    return crs, transform


def gdal_nodata(page) -> float | None:
    text = tag_value(page, GDAL_NODATA)
    try:
        return None if text is None else float(str(text).strip().rstrip("\x00"))
    except ValueError:
        log.warning("ignoring GDAL_NODATA %r: not a number", text)
        return None


def tag_value(page, code: int, default=None):
    tag = page.tags.get(code)
    return default if tag is None else tag.value
