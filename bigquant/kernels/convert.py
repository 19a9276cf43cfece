"""Stored TIFF samples to the values viewers show: the conversions of the read stage.

Each takes a decoded ``(y, x, samples)`` block and returns the image's values,
with any extra samples (alpha, or others) after the colour ones unchanged.
They follow what libtiff, Pillow and ImageMagick draw:

* MinIsWhite: 0 is white, so a value ``v`` is shown as ``peak - v`` (``2**bits - 1`` for
  9- to 15-bit samples, as GDAL's grey ramp shows them);
* signed RGB: no viewer draws it (Pillow opens none): ``v + 2**(bits - 1)`` as unsigned;
* 1- to 7-bit samples: stretched to 8 bits, ``v * 255 / (2**bits - 1)``,
  rounded (exact for 1, 2 and 4 bits: × 255, × 85, × 17), as Pillow unpacks them;
* palette: the colour map's 16-bit entries shown as 8-bit ones, ``entry >> 8``
  as Pillow does (old writers that stored 8-bit entries, all ≤ 255, are read as
  8-bit, as libtiff does);
* CMYK (Separated, InkSet CMYK): ``R = (peak - C)(peak - K) / peak``, Pillow's
  conversion;
* CIELab / ICCLab: to sRGB through XYZ, adapted (Bradford) from the file's
  WhitePoint (D50 when missing, libtiff's default) to sRGB's D65, so that
  Lab white is sRGB white as colour-managed viewers show it.
"""

from __future__ import annotations

import numpy as np

from .color import from_linear_xyz, peak_value

#: Bradford cone response matrix (for chromatic adaptation between white points).
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
#: CIE 1931 xy chromaticities of the D50 and D65 whites.
D50 = (0.3457, 0.3585)
D65 = (0.3127, 0.3290)


def invert(block: np.ndarray, n_colour: int = 1, top: int | None = None) -> np.ndarray:
    """MinIsWhite samples as MinIsBlack ones: ``top - v`` in the first ``n_colour`` samples,
    ``top`` the samples' peak (the dtype's by default; 4095 for 12-bit ones in uint16)."""
    out = block.copy()
    top = block.dtype.type(peak_value(block.dtype) if top is None else top)
    out[..., :n_colour] = top - block[..., :n_colour]
    return out


def offset_binary(block: np.ndarray) -> np.ndarray:
    """Signed integer samples as unsigned ones of the same size, ``v + 2**(bits - 1)``
    (-128..127 to 0..255): exact, in order, and a type viewers draw."""
    unsigned = np.dtype(f"u{block.dtype.itemsize}")
    return block.view(unsigned) ^ unsigned.type(1 << (8 * block.dtype.itemsize - 1))


def stretch_bits(block: np.ndarray, bits: int) -> np.ndarray:
    """1- to 7-bit samples (bool or uint8 holding ``0 .. 2**bits - 1``) as 8-bit ones."""
    top = (1 << bits) - 1
    if 255 % top == 0:  # 1, 2, 4 bits: an exact integer scale
        return block.astype(np.uint8) * np.uint8(255 // top)
    return np.rint(block.astype(np.float32) * (255 / top)).astype(np.uint8)


def colormap_lut(colormap: np.ndarray) -> np.ndarray:
    """A TIFF colour map ``(3, 2**bits)`` of uint16 as ``(2**bits, 3)`` 8-bit RGB entries."""
    colormap = np.asarray(colormap, np.uint16)
    if int(colormap.max(initial=0)) <= 255:
        return colormap.T.astype(np.uint8)
    return (colormap.T >> 8).astype(np.uint8)


def apply_colormap(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Palette indices ``(y, x, 1)`` as their RGB colours ``(y, x, 3)``."""
    index = block[..., 0]
    return lut[index.view(np.uint8) if index.dtype == bool else index]


def cmyk_to_rgb(block: np.ndarray) -> np.ndarray:
    """CMYK samples (plus any extra ones) as RGB of the same dtype."""
    top = peak_value(block.dtype)
    ink = block[..., :4].astype(np.float32)
    rgb = (top - ink[..., :3]) * ((top - ink[..., 3:4]) / top)
    if np.issubdtype(block.dtype, np.integer):
        rgb = np.rint(rgb)
    return np.concatenate([rgb.astype(block.dtype), block[..., 4:]], axis=-1)


def lab_to_rgb(block: np.ndarray, encoding: str, white_xy=D50) -> np.ndarray:
    """TIFF CIELab (``"cielab"``) or ICCLab (``"icclab"``) samples as sRGB of the same dtype.

    8-bit L* is ``0 .. 255`` for 0 to 100; CIELab a*, b* are signed
    (two's complement), ICCLab ones offset by 128. 16-bit samples scale the
    same way by 256.
    """
    dtype = block.dtype
    scale = 1.0 if dtype == np.uint8 else 256.0
    lab = np.empty((*block.shape[:-1], 3), np.float32)
    lab[..., 0] = block[..., 0] * np.float32(100 / peak_value(dtype))
    if encoding == "cielab":
        signed = np.dtype(f"i{dtype.itemsize}")
        lab[..., 1:] = block[..., 1:3].view(signed) / np.float32(scale)
    else:
        lab[..., 1:] = block[..., 1:3] / np.float32(scale) - 128
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _xyz(white_xy)
    rgb = from_linear_xyz(xyz.reshape(-1, 3) @ adaptation(white_xy, D65).T) * peak_value(dtype)
    rgb = np.rint(rgb).astype(dtype).reshape(lab.shape)
    return np.concatenate([rgb, block[..., 3:]], axis=-1)


def _xyz(xy) -> np.ndarray:
    """XYZ (Y = 1) of a white of chromaticity ``xy``."""
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def adaptation(source_xy, target_xy) -> np.ndarray:
    """Bradford matrix taking XYZ seen under white ``source_xy`` to white ``target_xy``."""
    gain = (_BRADFORD @ _xyz(target_xy)) / (_BRADFORD @ _xyz(source_xy))
    return np.linalg.inv(_BRADFORD) @ np.diag(gain) @ _BRADFORD
