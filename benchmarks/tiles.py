"""bigquant tiles against libvips dzsave, and bigquant view's latency, side by side.

    python -m pip install -e ".[test,bench]"   # bench: libvips, optional like GDAL
    python benchmarks/tiles.py --megapixels 100 1000
    python benchmarks/tiles.py --megapixels 100 --markdown docs/tiles_benchmark_results.md

The inputs are bench.py's cached mosaics of real photographs; each gets a 256-colour
store (bigquant compress at its defaults, no pyramid) made once in the work folder. Every
writer runs in its own process (wall time and peak RSS of the process tree measured from
outside, as in bench.py), into a fresh folder, in one session: ``bigquant tiles`` (Deep
Zoom, 254 + 1), libvips ``dzsave`` of the source TIFF as RGB PNG and, up to
``--palette-mp`` megapixels (it quantizes each tile on its own: 139 s at 100 MP),
``.png[palette,Q=100,dither=0]``. Each output is then read back for its tile count, its
bytes, the number of different palettes (PLTE chunks) among its full-resolution tiles,
and the share of overlap pixels on which neighbouring full-resolution tiles disagree
(over up to ``--pairs`` tiles and their right and lower neighbours, chosen evenly).

The fixed costs are measured on their own: a process importing bigquant's tiler, one also
opening the store, and ``bigquant tiles`` into a finished output's folder with nothing left
to write (the claim, the scan of the folder and the imports of a run).

The first store's tiles are also encoded by other exact encoders (Pillow's PNG, libdeflate's
strongest level, WebP lossless, xz), 64 full-resolution tiles from the image's middle: how
much smaller exact tiles could be.

``bigquant view`` is started with ``--no-browser`` on each store: the time from starting
the process to the page's files, ``info.json`` and every tile of the first screen served
(a 1000 x 800 canvas showing the whole image, six requests at a time as a browser makes
them), then the median and 95th percentile time to serve one tile on demand at full
resolution and at the level halfway between it and the first screen's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench import BIGQUANT, CACHE, RESULTS, make_input, markdown_head, measure

_DZSAVE = (
    "import sys, pyvips; pyvips.Image.new_from_file(sys.argv[1], access='sequential')"
    ".dzsave(sys.argv[2], suffix=sys.argv[3], tile_size=254, overlap=1)"
)
#: The first screen of `bigquant view`: a canvas of this size showing the whole image.
SCREEN = (1000, 800)


def store_for(src: Path, work: Path) -> Path:
    store = work / f"{src.stem}.zarr"
    if not store.exists():
        subprocess.run([BIGQUANT, "compress", str(src), str(store), "-q"], check=True)
    return store


def read_back(root: Path, pairs: int) -> dict:
    """Tiles, bytes, palettes and overlap disagreement of a Deep Zoom folder ``root``."""
    from PIL import Image

    files = [p for p in root.rglob("*.png")]
    top = max(int(p.parent.name) for p in files)
    full = {p.name: p for p in (root / str(top)).iterdir()}
    palettes = set()
    for p in full.values():
        palettes.add(_chunk(p.read_bytes(), b"PLTE"))
    cols = 1 + max(int(n.split("_")[0]) for n in full)
    rows = 1 + max(int(n.split("_")[1][:-4]) for n in full)
    step = max(1, round(math.sqrt(cols * rows / pairs)))
    differ = total = 0

    def rgb(c, r):
        with Image.open(full[f"{c}_{r}.png"]) as tile:
            return np.asarray(tile.convert("RGB"))

    for r in range(0, rows, step):
        for c in range(0, cols, step):
            here = rgb(c, r)
            if c + 1 < cols:  # the two columns both hold: here's last two, right's first two
                right = rgb(c + 1, r)
                differ += int((here[:, -2:] != right[:, :2]).any(axis=2).sum())
                total += here[:, -2:].shape[0] * 2
            if r + 1 < rows:
                below = rgb(c, r + 1)
                differ += int((here[-2:] != below[:2]).any(axis=2).sum())
                total += here.shape[1] * 2
    return {
        "tiles": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "full_res_tiles": len(full),
        "palettes": len(palettes - {None}),
        "overlap_differ": differ / total if total else None,
        "overlap_pixels": total,
    }


def _chunk(png: bytes, kind: bytes) -> bytes | None:
    i = 8
    while i + 8 <= len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        if png[i + 4 : i + 8] == kind:
            return png[i + 8 : i + 8 + n]
        if png[i + 4 : i + 8] == b"IDAT":
            return None
        i += 12 + n
    return None


def bench_tiles(
    src: Path, store: Path, work: Path, palette: bool, pairs: int, rounds: int
) -> list[dict]:
    rows = []
    out = work / "tiles"

    try:
        import pyvips  # noqa: F401

        vips = True
    except ImportError:
        vips = False
        rows.append({"tool": "libvips dzsave", "note": "skipped: pyvips is not installed"})

    def commands(folder: Path) -> dict[str, list[str]]:
        """Each writer's command, writing into ``folder``."""
        found = {"bigquant tiles": [BIGQUANT, "tiles", str(store), str(folder / "bq"), "-q"]}
        dzsave = [sys.executable, "-c", _DZSAVE, str(src)]
        if vips:
            found["dzsave .png (RGB)"] = [*dzsave, str(folder / "rgb"), ".png"]
        if vips and palette:
            found["dzsave .png[palette,Q=100,dither=0]"] = [
                *dzsave, str(folder / "pal"), ".png[palette,Q=100,dither=0]"
            ]  # fmt: skip
        return found

    # Round after round, the writers in turn: each ratio compares neighbours in time. Each run
    # writes into a folder of its own, all removed after the rounds (about 10 GB at 1 GP):
    # removing the last writer's tiles (285 MB of dzsave's RGB ones at 100 MP) just before a
    # run made that run 0.1-0.2 s slower.
    shutil.rmtree(out, ignore_errors=True)
    for n in range(rounds):
        here = out / f"round-{n}"
        here.mkdir(parents=True)
        for tool, command in commands(here).items():
            if n and tool.startswith("dzsave .png["):
                continue  # minutes a run, and no ratio against time depends on it
            run = measure(command)
            if n == 0:
                found = read_back(here / f"{Path(command[-2]).name}_files", pairs)  # OUT_files
                rows.append({"tool": tool, "runs": [], "peaks": [], **found})
            row = next(r for r in rows if r.get("tool") == tool)
            row["runs"].append(round(run["seconds"], 2))
            row.setdefault("cpus", []).append(round(run["cpu"], 2))
            row["peaks"].append(round(run["peak"] / 2**20))
            print(f"  {tool}: {row}", file=sys.stderr, flush=True)
    for row in rows:
        if "runs" in row:
            row["seconds"], row["peak_mib"] = statistics.median(row["runs"]), max(row["peaks"])
            row["cpu"] = statistics.median(row["cpus"])
    # The fixed costs, each a whole process.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ours = commands(out)["bigquant tiles"]
    subprocess.run(ours, check=True)
    fixed = {
        "import": [sys.executable, "-c", "import bigquant.tiles"],
        "import + open store": [
            sys.executable,
            "-c",
            f"import bigquant; bigquant.DeepZoom({str(store)!r})",
        ],
        "rerun, nothing to write": ours,
    }
    (out / "bq.dzi").unlink()  # a rerun finds every tile there and writes only the .dzi
    for name, command in fixed.items():
        rows.append(
            {"tool": f"fixed cost: {name}", "seconds": round(measure(command)["seconds"], 2)}
        )
    shutil.rmtree(out, ignore_errors=True)
    return rows


def bench_view(store: Path, samples: int = 60) -> dict:
    """Start-to-first-screen and per-tile latency of `bigquant view --no-browser`."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [BIGQUANT, "view", str(store), "--no-browser", "-q"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip()
        listening = time.perf_counter() - started

        def get(path: str) -> float:
            t = time.perf_counter()
            with urllib.request.urlopen(url + path, timeout=600) as response:
                response.read()
            return time.perf_counter() - t

        for path in ("", "viewer.js", "viewer.css"):
            get(path)
        with urllib.request.urlopen(url + "info.json") as response:
            info = json.load(response)
        t, top = info["tile_size"], info["top"]
        scale = min(SCREEN[0] / info["width"], SCREEN[1] / info["height"])
        first = top - max(0, math.floor(math.log2(1 / scale)))

        def grid(level: int) -> list[tuple[int, int]]:
            f = 2 ** (top - level)
            cols, rows = math.ceil(info["width"] / f / t), math.ceil(info["height"] / f / t)
            return [(c, r) for r in range(rows) for c in range(cols)]

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(get, [f"tile/{first}/{c}_{r}.png" for c, r in grid(first)]))
        first_screen = time.perf_counter() - started
        found = {
            "listening_s": round(listening, 2),
            "first_screen_s": round(first_screen, 2),
            "first_screen_tiles": len(grid(first)),
            "first_level": first,
        }
        rng = random.Random(0)
        for name, level in (("full", top), ("middle", (top + first) // 2)):
            picks = rng.sample(grid(level), min(samples, len(grid(level))))
            times = sorted(get(f"tile/{level}/{c}_{r}.png") for c, r in picks)
            found[f"{name}_level"] = level
            found[f"{name}_median_ms"] = round(1000 * statistics.median(times), 1)
            found[f"{name}_p95_ms"] = round(1000 * times[math.ceil(0.95 * len(times)) - 1], 1)
        return found
    finally:
        # SIGTERM, which the command takes as Ctrl-C: a benchmark run in the background (nohup,
        # `&`) starts its children with SIGINT ignored.
        proc.terminate()
        proc.wait(timeout=120)


def bench_encodings(store: Path, n: int = 64) -> list[dict]:
    """Bytes of ``n`` full-resolution tiles of ``store`` (a square block of them, from the
    image's middle) by other encoders than bigquant's: how much smaller exact tiles get."""
    import io
    import lzma

    import imagecodecs
    from PIL import Image

    from bigquant.kernels import png
    from bigquant.tiles import DeepZoom

    dz = DeepZoom(str(store))
    cols, rows = dz.grid(dz.top)
    side = math.isqrt(n)
    c0, r0 = (cols - side) // 2, (rows - side) // 2
    tiles = [
        dz._window(dz.top, *dz._box(dz.top, c, r)).astype(np.uint8)
        for r in range(r0, r0 + side)
        for c in range(c0, c0 + side)
    ]
    palette = dz.palette.colours[: dz.palette.indexed]

    def pillow(labels, **options):
        image = Image.fromarray(labels)
        image.putpalette(palette[:, :3].tobytes())
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **options)
        return buffer.getvalue()

    def webp(labels):
        buffer = io.BytesIO()
        Image.fromarray(palette[labels][..., :3]).save(buffer, "WEBP", lossless=True, method=6)
        return buffer.getvalue()

    def unfiltered(labels):  # the rows as bigquant's PNG holds them, before deflate
        return np.hstack([np.zeros((len(labels), 1), np.uint8), labels]).tobytes()

    encoders = {
        f"bigquant (libdeflate {png.LEVEL}, no filter)": dz._encode,
        "Pillow, default (zlib 6, adaptive filters)": pillow,
        "Pillow, optimize=True (zlib 9)": lambda t: pillow(t, optimize=True),
        "libdeflate 12, no filter (its pixel data only)": lambda t: imagecodecs.deflate_encode(
            unfiltered(t), level=12
        ),
        "WebP lossless, method 6 (not a PNG)": webp,
        "xz of the unfiltered rows (pixel data only, no image format)": lambda t: lzma.compress(
            unfiltered(t)
        ),
    }
    found = []
    for name, encode in encoders.items():
        started = time.perf_counter()
        size = sum(len(encode(t)) for t in tiles)
        found.append(
            {
                "encoder": name,
                "bytes": size,
                "ms_per_tile": round(1000 * (time.perf_counter() - started) / len(tiles), 2),
            }
        )
    for row in found:
        row["x_bigquant"] = round(row["bytes"] / found[0]["bytes"], 3)
    return found


def encodings_table(rows: list[dict]) -> str:
    lines = markdown_head(["encoder", "bytes", "× bigquant's", "ms a tile"])
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['bytes']} | {r['x_bigquant']} | {r['ms_per_tile']} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = [
        "input MP",
        "writer",
        "wall s, median (range)",
        "CPU s",
        "peak MiB",
        "tiles",
        "MB of tiles",
        "palettes (full-res tiles)",
        "overlap pixels that differ",
    ]
    lines = markdown_head(head)
    for r in rows:
        if "tiles" not in r and "seconds" not in r:
            lines.append(f"| {r.get('input_mp', '')} | {r['tool']} | {r.get('note', '')} |||||| ")
            continue
        wall = r.get("seconds")
        if len(r.get("runs", [])) > 1:
            wall = f"{wall} ({min(r['runs'])}-{max(r['runs'])})"
        cells = [
            r.get("input_mp"),
            r["tool"],
            wall,
            r.get("cpu"),
            r.get("peak_mib"),
            r.get("tiles"),
            None if "bytes" not in r else f"{r['bytes'] / 1e6:.1f}",
            None if "palettes" not in r else f"{r['palettes']} of {r['full_res_tiles']}",
            None if r.get("overlap_differ") is None else f"{100 * r['overlap_differ']:.1f} %",
        ]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    lines = []
    for mp in sorted({r["input_mp"] for r in rows}):
        same = {r["tool"]: r for r in rows if r["input_mp"] == mp and "seconds" in r}
        ours, rgb = same.get("bigquant tiles"), same.get("dzsave .png (RGB)")
        pal = same.get("dzsave .png[palette,Q=100,dither=0]")
        if ours and rgb:
            line = f"{mp} MP: wall {ours['seconds'] / rgb['seconds']:.2f}x dzsave RGB (target 0.5)"
            if pal:
                line += f", bytes {ours['bytes'] / pal['bytes']:.2f}x dzsave palette (target 0.5)"
            lines.append(line + f", peak RSS {ours['peak_mib']} MiB (target 1024)")
    return "\n".join(lines)


def view_table(views: list[dict]) -> str:
    head = [
        "input MP",
        "store",
        "listening s",
        "first screen s",
        "full-res tile median / p95 ms",
        "middle level tile median / p95 ms",
    ]
    lines = markdown_head(head)
    for v in views:
        lines.append(
            f"| {v['input_mp']} | {v['store']} | {v['listening_s']} | {v['first_screen_s']} "
            f"({v['first_screen_tiles']} tiles of level {v['first_level']}) | "
            f"{v['full_median_ms']} / {v['full_p95_ms']} (level {v['full_level']}) | "
            f"{v['middle_median_ms']} / {v['middle_p95_ms']} (level {v['middle_level']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--palette-mp",
        type=float,
        default=200,
        help="run dzsave's palette PNG only up to this size (it is slow)",
    )
    parser.add_argument("--pairs", type=int, default=1500, help="tiles checked for overlaps")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each writer, in turn")
    parser.add_argument("--work", type=Path, default=CACHE / "work-tiles")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    rows, views, encodings = [], [], {}
    for mp in args.megapixels:
        src = make_input(mp)
        store = store_for(src, args.work)
        size = round(open_mp(src), 1)
        print(f"== {src.name}: {size} MP", file=sys.stderr, flush=True)
        if not encodings:
            encodings = {"input_mp": size, "rows": bench_encodings(store)}
        for r in bench_tiles(src, store, args.work, mp <= args.palette_mp, args.pairs, args.rounds):
            rows.append({"input_mp": size, **r})
        views.append({"input_mp": size, "store": "no pyramid", **bench_view(store)})
        pyramid = args.work / f"{src.stem}.pyramid.zarr"
        if not pyramid.exists():
            subprocess.run(
                [BIGQUANT, "compress", str(src), str(pyramid), "--pyramid", "-q"], check=True
            )
        views.append({"input_mp": size, "store": "with --pyramid", **bench_view(pyramid)})
        print(f"  view: {views[-2:]}", file=sys.stderr, flush=True)
    load = f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"tiles-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "load": load,
                "rows": rows,
                "views": views,
                "encodings": encodings,
            },
            indent=1,
        )
    )
    text = (
        f"Run of {time.strftime('%Y-%m-%d')} on {machine} ({load}): "
        f"`python benchmarks/tiles.py {' '.join(sys.argv[1:])}`.\n\n"
        f"{table(rows)}\n\n```text\n{ratios(rows)}\n```\n\n"
        f"`bigquant view --no-browser` (first screen: {SCREEN[0]} x {SCREEN[1]}):\n\n"
        f"{view_table(views)}\n\n"
        f"The bytes of 64 full-resolution tiles from the middle of the {encodings['input_mp']} MP "
        "store, exact (the same pixels) by other encoders:\n\n"
        f"{encodings_table(encodings['rows'])}\n"
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


def open_mp(src: Path) -> float:
    import tifffile

    with tifffile.TiffFile(src) as tif:
        shape = tif.series[0].shape
    return shape[0] * shape[1] / 1e6


if __name__ == "__main__":
    main()
