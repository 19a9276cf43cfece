"""How the samples a TIFF stores become the values viewers show: the conversion plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import BigquantError
from ..kernels import convert
from .metadata import tag_value

#: TIFF tags read here: InkSet, WhitePoint.
_INKSET, _WHITEPOINT = 332, 318

#: Colour samples per pixel of the photometric interpretations bigquant reads.
COLOUR_SAMPLES = {"minisblack": 1, "miniswhite": 1, "palette": 1, "rgb": 3, "ycbcr": 3,
                   "separated": 4, "cielab": 3, "icclab": 3}  # fmt: skip


@dataclass(frozen=True)
class Decoding:
    """How the samples a TIFF stores become the values viewers show (`bigquant.kernels.convert`).

    ``stored`` is the file's photometric interpretation, ``bits`` its bits per
    sample; ``lut`` the 8-bit RGB colours of a palette; ``white`` the xy
    chromaticity of a Lab image's white; ``half`` marks float16 samples and
    ``signed`` signed RGB ones (shown as unsigned, `convert.offset_binary`).
    """

    stored: str
    bits: int
    lut: np.ndarray | None = dataclasses.field(default=None, compare=False)
    white: tuple[float, float] = convert.D50
    half: bool = False
    signed: bool = False

    @classmethod
    def needed(cls, stored: str, bits: int, dtype: np.dtype, **more) -> Decoding | None:
        """The decoding of these samples, or None where they are shown as stored."""
        signed_rgb = stored == "rgb" and dtype.kind == "i"
        if stored in ("minisblack", "rgb") and bits >= 8 and dtype != np.float16 and not signed_rgb:
            return None
        return cls(stored, bits, half=dtype == np.float16, signed=signed_rgb, **more)

    def shape(self, stored_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        height, width, samples = stored_shape
        if self.stored == "palette":
            return height, width, 3
        if self.stored == "separated":
            return height, width, samples - 1
        return stored_shape

    def dtype(self, stored: np.dtype) -> np.dtype:
        if self.stored == "palette" or self.bits < 8:
            return np.dtype(np.uint8)
        if self.signed:
            return np.dtype(f"u{stored.itemsize}")
        return np.dtype(np.float32) if stored == np.float16 else stored

    def describe(self) -> str:
        """What the conversion is, for the store's metadata."""
        if self.stored == "palette":
            return f"{self.bits}-bit palette to 8-bit RGB (colour map)"
        steps = []
        if self.bits < 8:
            steps.append(f"{self.bits}-bit to 8-bit")
        if self.stored == "miniswhite":
            steps.append("MinIsWhite to MinIsBlack (inverted)")
        elif self.signed:
            steps.append(f"signed RGB to unsigned (+{1 << (self.bits - 1)})")
        elif self.stored == "separated":
            steps.append("CMYK to RGB")
        elif self.stored in ("cielab", "icclab"):
            steps.append(f"{'CIELab' if self.stored == 'cielab' else 'ICCLab'} to sRGB")
        if self.half:
            steps.append("float16 to float32")
        return ", ".join(steps)

    def apply(self, block: np.ndarray) -> np.ndarray:
        """The shown values of a decoded ``(y, x, samples)`` block."""
        if self.stored == "palette":
            return convert.apply_colormap(block, self.lut)
        if self.bits < 8:
            block = convert.stretch_bits(block, self.bits)
        elif block.dtype == np.float16:
            block = block.astype(np.float32)
        if self.stored == "miniswhite":
            # 9- to 15-bit samples are inverted against their own peak (4095 for 12 bits).
            deep = 8 < self.bits < 8 * block.dtype.itemsize and block.dtype.kind == "u"
            return convert.invert(block, top=(1 << self.bits) - 1 if deep else None)
        if self.signed:
            return convert.offset_binary(block)
        if self.stored == "separated":
            return convert.cmyk_to_rgb(block)
        if self.stored in ("cielab", "icclab"):
            return convert.lab_to_rgb(block, self.stored, self.white)
        return block


#: TIFF PhotometricInterpretation codes by name, read by number: tifffile cannot name some
#: pages' (a 12-bit MinIsWhite one: ``'int' object has no attribute 'name'``).
_PHOTOMETRIC_CODES = {0: "miniswhite", 1: "minisblack", 2: "rgb", 3: "palette", 4: "mask",
                      5: "separated", 6: "ycbcr", 8: "cielab", 9: "icclab"}  # fmt: skip


def stored_photometric(path: str, page, n_samples: int) -> str:
    """The stored photometric interpretation, checked to be one bigquant reads."""
    try:
        name = _PHOTOMETRIC_CODES.get(int(page.photometric))
    except (TypeError, ValueError):
        name = None
    if name is None and 283 not in page.tags and page.tags.get(262) is None:
        # No PhotometricInterpretation tag: what most readers assume.
        name = "rgb" if n_samples >= 3 else "minisblack"
    if name not in COLOUR_SAMPLES:
        raise BigquantError(
            f"{path}: photometric interpretation {name or page.photometric} is not supported "
            "(bigquant reads grey, RGB, palette, CMYK and Lab images)"
        )
    if name == "separated" and tag_value(page, _INKSET, 1) != 1:
        raise BigquantError(f"{path}: multi-ink (non-CMYK) separated images are not supported")
    if name in ("cielab", "icclab") and page.dtype.kind == "f":
        raise BigquantError(f"{path}: floating-point Lab images are not supported")
    if n_samples < COLOUR_SAMPLES[name]:
        raise BigquantError(f"{path}: {name} image with only {n_samples} sample(s) per pixel")
    # JPEG-in-TIFF is stored as YCbCr but decoded to RGB.
    return "rgb" if name == "ycbcr" else name


def white_point(page) -> tuple[float, float]:
    white = tag_value(page, _WHITEPOINT)
    return convert.D50 if white is None or len(white) != 2 else (float(white[0]), float(white[1]))


def extrasamples_of(page, stored: str, n_extra: int) -> tuple[int, ...]:
    """ExtraSamples codes of the ``n_extra`` samples past the colour ones (0 where undeclared).

    RGB with a fourth sample and no ExtraSamples tag (tools that omit it) is
    RGBA, as Pillow shows it (libtiff too draws it as alpha): unassociated alpha.
    """
    if stored == "rgb" and n_extra == 1 and 338 not in page.tags:
        return (2,)
    codes = tuple(int(e) for e in (page.extrasamples or ()))[-n_extra:] if n_extra else ()
    return (0,) * (n_extra - len(codes)) + codes
