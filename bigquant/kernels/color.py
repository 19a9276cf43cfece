"""Colour spaces the codebook can be fitted and assigned in, and the ΔE colour difference.

Pixels are taken as sRGB (D65): 8- and 16-bit values over their full range,
float32 values in [0, 1]. ``rgb`` works on the stored values themselves;
``oklab`` (Björn Ottosson, 2020) and ``lab`` (CIELAB, D65 white) are perceptual:
equal distances there look about equally different, so k-means spends its
colours where the eye tells them apart. The codebook is always stored in the
source's own values.

ΔE here is ΔE_OK: 100 × the Euclidean distance in OKLab, a colour difference
on the scale of CIELAB's ΔE*ab (about 2 is just noticeable). Its mean over an
image is measured on a lattice of at least a million pixels (`delta_e_stride`):
converting every pixel of a gigapixel image would cost more than labelling it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..defaults import SPACES
from ..errors import ParameterError

# Linear sRGB -> LMS cone responses, and cube-rooted LMS -> OKLab (Ottosson 2020).
_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
# Linear sRGB -> CIE XYZ (D65), and the D65 reference white.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
_LAB_EPS = (6 / 29) ** 3
#: Pixels the mean ΔE is measured on, at least.
DELTA_E_PIXELS = 1 << 20


def check_space(space: str, n_channels: int, dtype=np.uint8) -> None:
    """Refuse an unknown space, or a perceptual one for an image that is not sRGB
    (three channels of unsigned or float values)."""
    if space not in SPACES:
        raise ParameterError(f"`space` must be one of {', '.join(SPACES)}, not {space!r}")
    if space != "rgb" and n_channels != 3:
        raise ParameterError(f"`space` {space} needs an RGB image, not {n_channels} channel(s)")
    if space != "rgb" and np.dtype(dtype).kind == "i":
        raise ParameterError(f"`space` {space} needs an sRGB image, not signed {np.dtype(dtype)}")


def peak_value(dtype: np.dtype) -> float:
    """The largest value of integer pixels; 1.0 for float images (assumed in [0, 1])."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def _decode(v: np.ndarray) -> np.ndarray:
    """sRGB transfer function: encoded [0, 1] -> linear light."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


@functools.cache
def _linear_table(dtype: np.dtype) -> np.ndarray:
    """Linear light of every 8- or 16-bit value: a lookup instead of a power per pixel."""
    return _decode(np.arange(peak_value(dtype) + 1) / peak_value(dtype))


def linear_rgb(pixels: np.ndarray) -> np.ndarray:
    """Linear-light float64 RGB of ``(n, 3)`` sRGB pixels."""
    if pixels.dtype in (np.uint8, np.uint16):
        return _linear_table(pixels.dtype)[pixels]
    return _decode(np.clip(pixels.astype(np.float64), 0, 1))


def oklab(pixels: np.ndarray) -> np.ndarray:
    """OKLab coordinates (L in [0, 1]) of ``(n, 3)`` sRGB pixels, as float64."""
    return _oklab_of_linear(linear_rgb(pixels))


def _oklab_of_linear(lin: np.ndarray) -> np.ndarray:
    return np.cbrt(lin @ _RGB_TO_LMS.T) @ _LMS_TO_OKLAB.T


def in_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float colour values as ``dtype``: rounded and clipped to its range for integers."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def lightness(colors: np.ndarray) -> np.ndarray:
    """OKLab lightness L in [0, 1] of ``(n, C)`` colours, taken as sRGB (grey for 1 or 2 channels).

    Channels past the third (alpha, or others) are ignored.
    """
    rgb = colors[:, :3] if colors.shape[1] >= 3 else np.repeat(colors[:, :1], 3, axis=1)
    return np.clip(oklab(rgb)[:, 0], 0, 1)


def to_space(pixels: np.ndarray, space: str) -> np.ndarray:
    """Coordinates of ``(n, C)`` pixels in ``space``, as float64.

    ``rgb`` keeps the stored values; ``oklab`` and ``lab`` treat them as sRGB.
    """
    if space == "rgb":
        return pixels.astype(np.float64)
    if space == "oklab":
        return oklab(pixels)
    xyz = (linear_rgb(pixels) @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > _LAB_EPS, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1
    )


def from_space(coords: np.ndarray, space: str, dtype: np.dtype) -> np.ndarray:
    """Inverse of `to_space`: values on the scale of ``dtype`` as float64, clipped to sRGB's gamut."""
    if space == "rgb":
        return coords.astype(np.float64)
    if space == "oklab":
        lin = (coords @ np.linalg.inv(_LMS_TO_OKLAB).T) ** 3 @ np.linalg.inv(_RGB_TO_LMS).T
    else:
        fy = (coords[:, 0] + 16) / 116
        f = np.stack([fy + coords[:, 1] / 500, fy, fy - coords[:, 2] / 200], axis=1)
        return from_linear_xyz(
            np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
        ) * peak_value(dtype)
    return _encode(lin) * peak_value(dtype)


def from_linear_xyz(xyz: np.ndarray) -> np.ndarray:
    """Encoded sRGB in [0, 1] of ``(n, 3)`` CIE XYZ (D65, white Y = 1), clipped to the gamut."""
    return _encode(xyz @ np.linalg.inv(_RGB_TO_XYZ).T)


def delta_e_stride(height: int, width: int) -> int:
    """Step between the rows, and between the columns, that mean ΔE is measured on.

    The largest odd step keeping at least `DELTA_E_PIXELS` pixels: odd, so that
    the lattice does not alias with the 8 × 8 pattern of ordered dithering.
    That is every pixel of images up to 9 × `DELTA_E_PIXELS` (9.4 megapixels),
    and between 1 and 2.9 million pixels of larger ones.
    """
    step = max(1, math.isqrt(height * width // DELTA_E_PIXELS))
    return step if step % 2 else step - 1


def delta_e_sum(
    block: np.ndarray,
    labels: np.ndarray,
    codebook: np.ndarray,
    origin,
    stride: int,
    skip: int | None = None,
) -> tuple[float, int]:
    """Sum of ΔE_OK over the lattice pixels of an RGB ``(y, x, 3)`` chunk and their colours,
    and how many pixels it sums over (those labelled ``skip`` left out).

    ``origin`` is the chunk's first (row, column) in the image: the lattice of
    every ``stride``-th row and column is fixed in image coordinates, so the
    result does not depend on the chunking.
    """
    rows = slice(-origin[0] % stride, None, stride)
    cols = slice(-origin[1] % stride, None, stride)
    pixels = block[rows, cols].reshape(-1, 3)
    picked = labels[rows, cols].ravel()
    if skip is not None:
        pixels, picked = pixels[picked != skip], picked[picked != skip]
    colors = oklab(codebook)[picked]
    return 100 * float(np.sqrt(((oklab(pixels) - colors) ** 2).sum(axis=1)).sum()), len(picked)


def to_8bit(values: np.ndarray, dtype: np.dtype, peak: float | None = None) -> np.ndarray:
    """Values of an image of ``dtype`` as rounded 8-bit ones.

    Unsigned integers scale from ``[0, peak]`` (the dtype's largest value by
    default; ``2**bits - 1`` for 12-bit data), signed ones from the dtype's
    range, floats from [0, 1] (clipped; NaN is 0).
    """
    values = np.asarray(values, dtype=np.float64)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = (0, peak or info.max) if dtype.kind == "u" else (info.min, info.max)
        values = np.clip((values - low) * 255 / (high - low), 0, 255)  # uint8 stays exact
    else:
        values = np.clip(np.nan_to_num(values), 0, 1) * 255
    return np.rint(values).astype(np.uint8)
