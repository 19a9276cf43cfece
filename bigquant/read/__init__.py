"""Read stage: open an image lazily as a ``(rows, columns, channels)`` dask array.

Nothing here decodes pixels until a chunk is computed. One module a job:

``image``
    `Image` and `as_image`: the checks every source passes, arrays given by the user.
``formats``
    `open_image`: which reader a file needs; the Zarr, PNG and JPEG readers.
``tiff``
    TIFF decoding: a picklable array over the tiles under each chunk (`TiffSource`);
    the tiles a sample decoded, kept for the label pass (`DECODED`).
``photometric``
    How stored samples become shown values: the conversion plan (`Decoding`).
``metadata``
    What locates an image: GeoTIFF tags and geotransforms, OME pixel sizes, GDAL nodata.

The rest of bigquant imports from this package's names only.
"""

from .formats import open_image
from .image import SUPPORTED_DTYPES, Image, as_image
from .metadata import georeference, geotiff_tags, ome_pixel_size
from .photometric import Decoding
from .tiff import DECODED, TIFF_MAGIC, TiffSource, palette_usage

__all__ = [
    "DECODED",
    "SUPPORTED_DTYPES",
    "TIFF_MAGIC",
    "Decoding",
    "Image",
    "TiffSource",
    "as_image",
    "georeference",
    "geotiff_tags",
    "ome_pixel_size",
    "open_image",
    "palette_usage",
]
