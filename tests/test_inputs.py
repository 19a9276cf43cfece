"""Every kind of TIFF comes out as its viewers show it: the source and the decompressed output,
opened in the same third-party reader (Pillow, or GDAL where Pillow cannot), show the same
picture; exactly the same where the image has at most K colours.

Sources are real photographs (reduced to at most 16 colours where exactness is checked) written
by tifffile in each photometric interpretation, bit depth and sample layout.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import tifffile
from conftest import cli, damage_software_tag
from PIL import Image, ImageCms

import bigquant

K = 16


@pytest.fixture(scope="module")
def few(astronaut) -> np.ndarray:
    """The astronaut, 128 x 128, in at most 16 colours."""
    small = Image.fromarray(astronaut[::4, ::4])
    return np.asarray(small.quantize(K, dither=Image.Dither.NONE).convert("RGB"))


def round_trip(tmp_path, src, *, colors: int = K, palette: bool = False, **kwargs) -> str:
    """Compress ``src`` and decompress it to a TIFF; the TIFF's path."""
    bigquant.compress(src, tmp_path / "s.zarr", colors, **kwargs)
    out = tmp_path / ("p.tif" if palette else "out.tif")
    bigquant.decompress(tmp_path / "s.zarr", out, palette=palette)
    return str(out)


def shown(path) -> np.ndarray:
    """What Pillow shows of a file: its pixels as 8-bit RGB(A), L or LA, or as stored for
    deeper data."""
    with Image.open(path) as im:
        if im.mode in ("P", "CMYK"):
            im = im.convert("RGB")
        elif im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def test_miniswhite_comes_out_as_the_same_picture(tmp_path, few):
    grey = np.asarray(Image.fromarray(few).convert("L"))
    # A photograph stored MinIsWhite (0 is white), and a bilevel fax-like scan.
    tifffile.imwrite(tmp_path / "g.tif", 255 - grey, photometric="miniswhite")
    tifffile.imwrite(tmp_path / "fax.tif", grey < 100, photometric="miniswhite")
    for name in ("g", "fax"):
        src = tmp_path / f"{name}.tif"
        out = round_trip(tmp_path / name, src) if (tmp_path / name).mkdir() is None else None
        np.testing.assert_array_equal(shown(out), shown(src), err_msg=name)
    assert np.array_equal(shown(tmp_path / "g.tif"), grey)  # Pillow inverts, as it should


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_grey_is_shown_as_8_bit(tmp_path, few, bits):
    grey = np.asarray(Image.fromarray(few).convert("L")) >> (8 - bits)
    src = tmp_path / "g.tif"
    tifffile.imwrite(src, grey.astype(bool) if bits == 1 else grey, bitspersample=bits,
                     photometric="minisblack")  # fmt: skip
    out = round_trip(tmp_path, src)
    np.testing.assert_array_equal(shown(out), shown(src))
    assert bigquant.open_store(tmp_path / "s.zarr").meta.source.converted == f"{bits}-bit to 8-bit"


def test_palette_tiff_is_read_through_its_colour_map(tmp_path, few):
    indexed = Image.fromarray(few).quantize(K, dither=Image.Dither.NONE)
    src = tmp_path / "p.tif"
    indexed.save(src)  # Pillow writes the palette TIFF: 8-bit indices and a colour map
    out = round_trip(tmp_path, src)
    np.testing.assert_array_equal(shown(out), shown(src))
    # Fewer colours than the palette: the picture up to quantization, as a palette TIFF again.
    palette = (
        round_trip(tmp_path / "8", src, colors=8, palette=True)
        if (tmp_path / "8").mkdir() is None
        else None
    )
    assert Image.open(palette).mode == "P"
    assert len(np.unique(shown(palette).reshape(-1, 3), axis=0)) == 8


def test_cmyk_is_converted_as_pillow_converts_it(tmp_path, few):
    src = tmp_path / "c.tif"
    tifffile.imwrite(src, np.asarray(Image.fromarray(few).convert("CMYK")), photometric="separated")
    out = round_trip(tmp_path, src)
    np.testing.assert_array_equal(shown(out), shown(src))
    assert Image.open(out).mode == "RGB"


def test_cielab_photograph_is_shown_in_srgb(tmp_path, astronaut):
    photo = astronaut[::4, ::4]
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    src = tmp_path / "lab.tif"
    # Pillow's LAB bytes are TIFF CIELab's: L* 0..255, a* and b* signed.
    tifffile.imwrite(src, np.asarray(ImageCms.applyTransform(Image.fromarray(photo), to_lab)),
                     photometric="cielab")  # fmt: skip
    out = shown(round_trip(tmp_path, src, colors=256))
    with Image.open(src) as lab:
        to_rgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        pillow = np.asarray(ImageCms.applyTransform(lab, to_rgb)).astype(int)
    # Up to quantization (256 colours) and colour management's rounding: close to Pillow's
    # colour-managed rendering, and to the photograph itself; white stays white.
    assert np.abs(out - pillow).mean() < 3
    assert np.abs(out.astype(int) - photo).mean() < 3
    assert bigquant.open_store(tmp_path / "s.zarr").meta.source.converted == "CIELab to sRGB"


@pytest.mark.parametrize(("channels", "mode"), [(3, "RGBA"), (1, "LA")])
def test_alpha_stays_alpha(tmp_path, few, channels, mode):
    colour = few if channels == 3 else np.asarray(Image.fromarray(few).convert("L"))[:, :, None]
    alpha = np.where(np.arange(few.shape[1]) < 40, 0, 255).astype(np.uint8)
    pixels = np.dstack([colour, np.broadcast_to(alpha, few.shape[:2])])
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, pixels, photometric="rgb" if channels == 3 else "minisblack",
                     extrasamples=["unassalpha"])  # fmt: skip
    out = round_trip(tmp_path, src, colors=2 * K)
    assert Image.open(src).mode == Image.open(out).mode == mode
    np.testing.assert_array_equal(shown(out), shown(src))
    bigquant.preview(tmp_path / "s.zarr", tmp_path / "a.png")
    np.testing.assert_array_equal(shown(tmp_path / "a.png"), shown(src))
    result = cli("decompress", tmp_path / "s.zarr", tmp_path / "p.tif", "--palette")
    assert result.returncode == 1 and "cannot carry the image's alpha" in result.stderr


def test_orientation_is_carried_so_viewers_turn_both_alike(tmp_path, few):
    stored = np.ascontiguousarray(few[:, :100])
    src = tmp_path / "o.tif"
    tifffile.imwrite(src, stored, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    out = round_trip(tmp_path, src)
    upright = shown(src)  # Pillow honours the tag: 90 degrees clockwise
    np.testing.assert_array_equal(upright, np.rot90(stored, -1))
    np.testing.assert_array_equal(shown(out), upright)
    np.testing.assert_array_equal(tifffile.imread(out), stored)  # readers that ignore it
    bigquant.preview(tmp_path / "s.zarr", tmp_path / "o.png")  # a picture: turned upright
    np.testing.assert_array_equal(shown(tmp_path / "o.png"), upright)
    for orientation in range(1, 9):  # the preview turns as Pillow does, every way
        src = tmp_path / f"{orientation}.tif"
        tifffile.imwrite(src, stored[:40, :60], extratags=[(274, "H", 1, orientation, True)])
        bigquant.compress(src, tmp_path / f"{orientation}.zarr", K)
        bigquant.preview(tmp_path / f"{orientation}.zarr", tmp_path / f"{orientation}.png")
        np.testing.assert_array_equal(shown(tmp_path / f"{orientation}.png"), shown(src))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float64])
def test_signed_and_double_values_are_quantized_as_they_are(tmp_path, few, dtype):
    grey = np.asarray(Image.fromarray(few).convert("L")).astype(np.int16) - 100
    values = (
        (grey / 255.0).astype(dtype)
        if dtype == np.float64
        else grey.astype(dtype) // (2 if dtype == np.int8 else 1)
    )
    src = tmp_path / "v.tif"
    tifffile.imwrite(src, values)
    out = round_trip(tmp_path, src)
    if dtype == np.int16:  # Pillow reads it (I;16S)
        np.testing.assert_array_equal(shown(out), shown(src))
    np.testing.assert_array_equal(tifffile.imread(out), values)
    assert tifffile.imread(out).dtype == dtype


def test_12_bit_keeps_its_values_and_its_peak(tmp_path, few):
    grey = np.asarray(Image.fromarray(few).convert("L")).astype(np.uint16) << 4
    src = tmp_path / "g12.tif"
    tifffile.imwrite(src, grey | 7, bitspersample=12)
    meta = bigquant.compress(src, tmp_path / "s.zarr", 8)
    assert meta.source.bits == 12
    assert meta.psnr == pytest.approx(10 * np.log10(4095**2 / meta.mse))
    bigquant.decompress(tmp_path / "s.zarr", tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16 and out.max() <= 4095
    # The preview scales 4095 to 255, as a viewer of 12-bit data would.
    bigquant.preview(tmp_path / "s.zarr", tmp_path / "g.png")
    np.testing.assert_array_equal(shown(tmp_path / "g.png"), np.rint(out * (255 / 4095)))


def test_float16_and_untagged_float_grey_open(tmp_path, few):
    grey = np.asarray(Image.fromarray(few).convert("L")) / np.float32(255)
    tifffile.imwrite(tmp_path / "h.tif", grey.astype(np.float16))
    tifffile.imwrite(tmp_path / "f.tif", grey.astype(np.float32), photometric=None)
    for name in ("h", "f"):
        (tmp_path / name).mkdir()
        out = tifffile.imread(round_trip(tmp_path / name, tmp_path / f"{name}.tif"))
        np.testing.assert_array_equal(out, grey.astype(np.float16 if name == "h" else np.float32))


def test_nan_pixels_get_the_reserved_label_and_come_back(tmp_path, few):
    values = np.asarray(Image.fromarray(few).convert("L")) / np.float32(255)
    values[20:60, 30:90] = np.nan
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, values)
    out = shown(round_trip(tmp_path, src))  # Pillow reads float32 grey (mode F)
    np.testing.assert_array_equal(out, shown(src))  # NaN where NaN was, the rest exact
    store = bigquant.open_store(tmp_path / "s.zarr")
    label = store.meta.nodata_label
    assert label == store.meta.n_colors == len(store.codebook) - 1
    assert (store.labels[:] == label).sum() == store.meta.counts[label] == 40 * 60
    assert np.isnan(store.codebook[label]).all() and store.meta.source.nodata == "nan"
    assert store.meta.mse == 0 and store.meta.psnr is None  # NaN counts in no error
    # Strict JSON everywhere: the store's attributes and `info --json`.
    attrs = (tmp_path / "s.zarr" / "zarr.json").read_text()
    json.loads(attrs, parse_constant=lambda c: pytest.fail(f"{c} in zarr.json"))
    result = cli("info", tmp_path / "s.zarr", "--json")
    info = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in info --json"))
    assert info["nodata_label"] == label and info["codebook"][label] == [None]


def test_gdal_nodata_is_kept_out_of_the_fit_and_written_back(tmp_path, china):
    photo = china[:200, :240].copy()
    photo[:60, :80] = 0  # no data there: a mosaic's empty corner
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, photo, photometric="rgb", tile=(64, 64),
                     extratags=[(42113, "s", 0, "0", True)])  # fmt: skip
    meta = bigquant.compress(src, tmp_path / "s.zarr", 15, zarr_format=2)
    assert (meta.n_colors, meta.nodata_label, meta.source.nodata) == (15, 15, 0)
    assert meta.counts[15] == (photo == 0).all(axis=2).sum()
    store = bigquant.open_store(tmp_path / "s.zarr")
    assert (store.codebook[:15] != 0).any(axis=1).all()  # no colour was spent on it
    rgb, palette = tmp_path / "rgb.tif", tmp_path / "p.tif"
    bigquant.decompress(store, rgb)
    bigquant.decompress(store, palette, palette=True)
    nodata = (shown(rgb) == 0).all(axis=2)
    np.testing.assert_array_equal(nodata, (photo == 0).all(axis=2))
    assert (shown(palette)[nodata] == 0).all()
    for path, value in ((rgb, "0"), (palette, "15")):
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].tags[42113].value == value
    # Previews are transparent where there is no data, and as opaque as a block's share of it.
    bigquant.preview(store, tmp_path / "full.png")
    np.testing.assert_array_equal(shown(tmp_path / "full.png")[:, :, 3] == 0, nodata)
    bigquant.preview(store, tmp_path / "small.png", max_size=80)  # 3 x 3 blocks
    alpha = shown(tmp_path / "small.png")[:, :, 3]
    assert (alpha[19, 25], alpha[19, 26], alpha[19, 27], alpha[20, 0]) == (0, 85, 255, 255)
    if shutil.which("gdalinfo"):  # GDAL sees the same NoData, in the store too
        for path, value in ((rgb, 0), (palette, 15), (f'ZARR:"{tmp_path / "s.zarr"}":/labels', 15)):
            text = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True).stdout
            assert f"NoData Value={value}" in text, path


def test_damaged_files_give_one_line_and_library_notices_only_with_v(tmp_path, few):
    src = tmp_path / "w.tif"
    tifffile.imwrite(src, few, photometric="rgb", software="x")
    damage_software_tag(src, src)
    quiet = cli("compress", src, tmp_path / "a.zarr", "--colors", K, "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = cli("compress", src, tmp_path / "b.zarr", "--colors", K, "-v")
    notices = [line for line in loud.stderr.splitlines() if line.startswith("bigquant: tifffile:")]
    assert len(notices) == 1 and "invalid value offset" in notices[0]

    # A header claiming 65535 samples per pixel: refused before any allocation.
    src = tmp_path / "huge.tif"
    tifffile.imwrite(src, few[:, :, 0], tile=(64, 64))
    with tifffile.TiffFile(src) as tif:
        offset = tif.pages[0].tags[277].offset
    damaged = bytearray(src.read_bytes())
    struct.pack_into("<H", damaged, offset + 8, 65535)
    src.write_bytes(bytes(damaged))
    result = cli("compress", src, tmp_path / "c.zarr", "-q")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("bigquant: error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / ".c.zarr.partial").exists()


def gdal_view(tmp_path, path, *, raw: bool = False, expand: bool = False) -> np.ndarray:
    """What GDAL reads of a file (its default view, the raw samples, or a colour table
    expanded), through ``gdal_translate`` to a plain pixel-interleaved TIFF."""
    out = tmp_path / f"gdal-{path.stem if hasattr(path, 'stem') else 'x'}-{raw}-{expand}.tif"
    args = ["gdal_translate", "-q", "-co", "INTERLEAVE=PIXEL"] + ["-expand", "gray"] * expand
    subprocess.run([*args, f"GTIFF_RAW:{path}" if raw else str(path), str(out)], check=True)
    return tifffile.imread(out)


needs_gdal = pytest.mark.skipif(not shutil.which("gdal_translate"), reason="GDAL's tools")


@needs_gdal
def test_cmyk_with_alpha_keeps_its_colours_and_its_alpha(tmp_path, few):
    alpha = np.where(np.arange(few.shape[1]) < 40, 0, 255).astype(np.uint8)
    cmyk = np.asarray(Image.fromarray(few).convert("CMYK"))
    src = tmp_path / "c.tif"
    tifffile.imwrite(src, np.dstack([cmyk, np.broadcast_to(alpha, few.shape[:2])]),
                     photometric="separated", extrasamples=["unassalpha"])  # fmt: skip
    out = gdal_view(tmp_path, round_trip(tmp_path, src, colors=2 * K))
    assert Image.open(tmp_path / "out.tif").mode == "RGBA"
    # GDAL's colours of the source (Pillow's conversion), and its alpha: GDAL's default view
    # draws a CMYK source opaque (libtiff's RGBA reader skips the alpha), its raw one has it.
    np.testing.assert_array_equal(out[:, :, :3], gdal_view(tmp_path, src)[:, :, :3])
    np.testing.assert_array_equal(out[:, :, 3], gdal_view(tmp_path, src, raw=True)[:, :, 4])


@needs_gdal
def test_12_bit_miniswhite_is_inverted_against_its_own_peak(tmp_path, few):
    grey = np.asarray(Image.fromarray(few).convert("L")).astype(np.uint16) << 4 | 9
    src = tmp_path / "w.tif"
    tifffile.imwrite(src, 4095 - grey, photometric="miniswhite", bitspersample=12)
    out = tifffile.imread(round_trip(tmp_path, src))
    np.testing.assert_array_equal(out, grey)  # 0 is white: shown as 4095, MinIsBlack
    # GDAL draws the source through a grey ramp from white: the output's values, to 8 bits.
    shown_8 = gdal_view(tmp_path, src, expand=True)
    assert np.abs(shown_8 - np.rint(out * (255 / 4095))).max() <= 1
    assert bigquant.open_store(tmp_path / "s.zarr").meta.source.bits == 12


def test_a_stack_of_pages_is_its_first_page_as_viewers_show_it(tmp_path, few, caplog):
    grey = np.asarray(Image.fromarray(few).convert("L")).astype(np.int16) // 2 - 64
    stack = np.stack([[(grey + 3 * c + z).astype(np.int8) for z in range(3)] for c in range(2)])
    src = tmp_path / "s.ome.tif"
    tifffile.imwrite(src, stack, metadata={"axes": "CZYX"})
    out = round_trip(tmp_path, src)
    np.testing.assert_array_equal(shown(out), shown(src))  # Pillow: the first page, both
    np.testing.assert_array_equal(tifffile.imread(out), stack[0, 0])
    assert "quantizing its first page" in caplog.text


@needs_gdal
def test_signed_planar_rgb_becomes_unsigned_so_viewers_open_it(tmp_path, few):
    signed = (few.astype(np.int16) - 128).astype(np.int8)
    planes = np.concatenate([np.moveaxis(signed, -1, 0), np.full((1, *few.shape[:2]), 5, np.int8)])
    src = tmp_path / "p.tif"
    tifffile.imwrite(src, planes, photometric="rgb", planarconfig="separate",
                     extrasamples=["unspecified"])  # fmt: skip
    out = round_trip(tmp_path, src)
    assert Image.open(out).mode == "RGB"  # Pillow opens none of signed RGB
    np.testing.assert_array_equal(shown(out), few)
    np.testing.assert_array_equal(
        gdal_view(tmp_path, out), gdal_view(tmp_path, src).astype(np.int16) + 128
    )
    assert bigquant.open_store(tmp_path / "s.zarr").meta.source.converted == (
        "signed RGB to unsigned (+128)"
    )


def test_four_rgb_samples_without_extrasamples_are_rgba(tmp_path, few):
    alpha = np.where(np.arange(few.shape[1]) < 40, 0, 255).astype(np.uint8)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.dstack([few, np.broadcast_to(alpha, few.shape[:2])]),
                     photometric="rgb", extrasamples=["unassalpha"])  # fmt: skip
    with tifffile.TiffFile(src) as tif:  # then the tag is taken away, as some tools omit it
        offset = tif.pages[0].tags[338].offset
    data = bytearray(src.read_bytes())
    struct.pack_into("<H", data, offset, 65000)  # an unknown private tag instead
    src.write_bytes(bytes(data))
    out = round_trip(tmp_path, src, colors=2 * K)
    assert Image.open(src).mode == Image.open(out).mode == "RGBA"
    np.testing.assert_array_equal(shown(out), shown(src))
