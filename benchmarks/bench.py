"""bigquant against the tools a user would pick instead, side by side on one machine.

    python -m pip install -e ".[test]"            # scikit-image photos, Pillow
    apt-get install gdal-bin python3-gdal          # optional: GDAL's rgb2pct.py
    python -m pip install -e ".[bench]"           # optional: libvips' palette PNG
    python benchmarks/bench.py --megapixels 100 1000
    python benchmarks/bench.py --megapixels 100 --variants --peers gdal

Inputs are mosaics of real photographs (scikit-learn's and scikit-image's sample
images, with flips) written tile by tile as 512² zlib TIFFs and cached in
benchmarks/cache/. Every tool runs in its own process; wall time and peak
resident memory (the process and its children) are measured from outside. PSNR is
computed against the input over the full image, chunk by chunk, and so are mean ΔE_OK
and the PSNR of both images blurred by a Gaussian (σ = 1.5 px), which shows what
dithering buys. bigquant's compress runs with ``-v``, and the benchmark reads its fixed
costs (sample, init, iterations, colour table) from that log; the imports are timed in a
process of their own. ``--variants`` adds bigquant's options (colour space, dithering,
thousands of colours, palette TIFF). Results go to stdout as a Markdown table, to
benchmarks/results/*.json and, with ``--markdown docs/benchmark_results.md``, to the
Markdown file the documentation's benchmark page includes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

#: The console script beside the Python running the benchmark: it runs without the venv's
#: bin on PATH, where a bare "bigquant" would be looked up.
BIGQUANT = shutil.which("bigquant", path=os.path.dirname(sys.executable)) or "bigquant"

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
TILE = 512

# Run a command and report its wall time, the peak RSS and the CPU time of its process tree.
_MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    r = subprocess.run(sys.argv[2:], timeout=float(sys.argv[1]) or None)
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"code": r.returncode, "seconds": time.perf_counter() - t,
                      "peak": u.ru_maxrss * 1024, "cpu": u.ru_utime + u.ru_stime}))
    """
)


def measure(command: list[str], timeout: float = 0) -> dict:
    """Wall time, peak RSS, the exit code and stderr of ``command``, and the machine's
    1-minute load average just before it (other processes on the same cores)."""
    load = os.getloadavg()[0]
    try:
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(timeout), *command],
            capture_output=True,
            text=True,
            timeout=timeout + 60 if timeout else None,
        )
    except subprocess.TimeoutExpired:
        return {"code": "timeout", "seconds": timeout, "peak": None, "load": load}
    if out.returncode:
        if "TimeoutExpired" in out.stderr:
            return {"code": "timeout", "seconds": timeout, "peak": None, "load": load}
        raise RuntimeError(f"{os.path.basename(command[0])} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["code"]:
        raise RuntimeError(f"{' '.join(command)} exited {result['code']}:\n{out.stderr[-2000:]}")
    result["stderr"], result["load"] = out.stderr, load
    return result


def photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    images = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    images += [
        getattr(skimage.data, name)()
        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
    ]
    return images


def make_input(megapixels: float) -> Path:
    """Cached mosaic TIFF of about ``megapixels``, square, whole 512² tiles."""
    from bigquant.mosaic import write_mosaic

    side = round(math.sqrt(megapixels * 1e6) / TILE) * TILE
    path = CACHE / f"mosaic-{side}.tif"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        write_mosaic(tmp, side, side, tile=TILE, photos=photos(), seed=1)
        tmp.rename(path)
    return path


#: Gaussian blur (pixels) the "blurred PSNR" sees the images through: roughly the eye at
#: a normal viewing distance, where dithering patterns merge into the colours they mix.
BLUR = 1.5


def quality(src: Path, result) -> dict:
    """PSNR, mean ΔE_OK and blurred PSNR of a (Y, X, 3) dask array against the source TIFF.

    Chunk by chunk. ΔE_OK on bigquant's lattice (`bigquant.kernels.color.delta_e_stride`).
    """
    import dask
    from scipy.ndimage import gaussian_filter

    from bigquant.kernels.color import delta_e_stride, oklab
    from bigquant.read import open_image

    original = open_image(src).data
    result = result.rechunk(original.chunks)
    mse = ((original.astype(np.float32) - result) ** 2).mean(dtype=np.float64)
    step = delta_e_stride(*original.shape[:2])

    def delta_e(a, b):
        d = ((oklab(a.reshape(-1, 3)) - oklab(b.reshape(-1, 3))) ** 2).sum(axis=1)
        return 100 * np.sqrt(d).reshape(a.shape[:2])

    de = original[::step, ::step].map_blocks(
        delta_e, result[::step, ::step], drop_axis=2, dtype=np.float64
    )

    def blur(a):
        return gaussian_filter(a.astype(np.float32), (BLUR, BLUR, 0))

    depth = {0: 8, 1: 8, 2: 0}
    blurred = (
        (original.map_overlap(blur, depth=depth) - result.map_overlap(blur, depth=depth)) ** 2
    ).mean(dtype=np.float64)
    mse, de, blurred = dask.compute(mse, de.mean(), blurred)
    return {"psnr": _psnr(mse), "delta_e": float(de), "blurred": _psnr(blurred)}


def _psnr(mse: float) -> float:
    return 10 * math.log10(255**2 / mse) if mse else math.inf


def palette_tiff(path: Path):
    """A palette TIFF (as rgb2pct writes) as a lazy RGB dask array."""
    import dask.array as da
    import tifffile
    import zarr
    from tifffile.zarr import ZarrTiffStore

    from bigquant.label import apply_codebook

    tif = tifffile.TiffFile(path)
    colormap = (tif.pages[0].colormap >> 8).astype(np.uint8).T  # (256, 3)
    indices = da.from_zarr(zarr.open_array(ZarrTiffStore(tif.series[0], level=0), mode="r"))
    return apply_codebook(indices.rechunk(2048), colormap)


def disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def row(tool, src, run, *, psnr=None, out=None, megapixels=None, note="", scores=None) -> dict:
    mp = megapixels if megapixels is not None else _megapixels(src)
    scores = scores or {}
    psnr = scores.get("psnr", psnr)
    return {
        "tool": tool,
        "input_mp": round(mp, 1),
        "seconds": round(run["seconds"], 2) if run["code"] == 0 else None,
        "mp_per_s": round(mp / run["seconds"], 2) if run["code"] == 0 else None,
        "peak_mib": round(run["peak"] / 2**20) if run.get("peak") else None,
        "psnr": None if psnr is None else round(psnr, 2),
        "delta_e": None if scores.get("delta_e") is None else round(scores["delta_e"], 2),
        "blurred": None if scores.get("blurred") is None else round(scores["blurred"], 2),
        "output_mib": None if out is None else round(disk_size(out) / 2**20, 1),
        "load": round(run["load"], 1) if "load" in run else None,
        "note": note if run["code"] == 0 else f"{run['code']} after {run['seconds']:.0f} s",
    }


def _megapixels(src: Path) -> float:
    import tifffile

    with tifffile.TiffFile(src) as tif:
        shape = tif.series[0].shape
    return shape[0] * shape[1] / 1e6


def bench_bigquant(src: Path, work: Path, colors: int, variants: bool = False) -> list[dict]:
    """bigquant at defaults and decompress; with ``variants``, the options of issue 5 too."""
    rows = [_bigquant_row(src, work, ["-c", str(colors)])]
    rows.append(_bigquant_row(src, work, ["-c", str(colors), "--workers", "2"]))
    store = work / f"{src.stem}.zarr"
    for flags, suffix in [([], ".bq.tif"), (["--palette"], ".palette.tif")][: 1 + variants]:
        out = work / f"{src.stem}{suffix}"
        run = measure([BIGQUANT, "decompress", str(store), str(out), *flags, "--overwrite", "-q"])
        rows.append(row(" ".join(["bigquant decompress", *flags]), src, run, out=out))
    if variants:
        for flags in (
            ["-c", str(colors), "--space", "oklab"],
            ["-c", str(colors), "--dither", "ordered"],
            ["-c", str(colors), "--dither", "floyd-steinberg"],
            ["-c", "4096"],
            ["-c", "65536"],
        ):
            rows.append(_bigquant_row(src, work, flags))
    return rows


def _compress(src: Path, store: Path, flags: list[str], verbose: bool = False) -> list[str]:
    return [BIGQUANT, "compress", str(src), str(store), *flags, "--overwrite",
            "-v" if verbose else "-q"]  # fmt: skip


def _bigquant_row(src: Path, work: Path, flags: list[str]) -> dict:
    store = work / f"{src.stem}.zarr"
    run = measure(_compress(src, store, flags, verbose=True))
    if run["code"] != 0:
        return row(" ".join(["bigquant compress", *flags]), src, run)
    import bigquant

    opened = bigquant.open_store(store)
    scores = quality(src, opened.quantized())
    # The store's own full-image figures agree with the benchmark's.
    assert abs(scores["psnr"] - opened.meta.psnr) < 1e-6, (scores, opened.meta)
    assert abs(scores["delta_e"] - opened.meta.delta_e) < 1e-6, (scores, opened.meta)
    found = row(" ".join(["bigquant compress", *flags]), src, run, scores=scores, out=store)
    found["stages"] = stages(run["stderr"])
    return found


#: What the fixed costs are called in compress's -v log (`bigquant.fit`, `bigquant.pipeline`).
_STAGES = {
    "sample": r"read the sample in ([\d.]+) s",
    "imports waited for": r"waited ([\d.]+) s for scikit-learn's and dask-ml's imports",
    "init": r"init \(k-means\+\+ and scikit-learn's k-means\) in ([\d.]+) s",
    "dask-ml iterations": r"dask-ml's \d+ iterations in ([\d.]+) s",
    "two-level fit": r"coarse clusters in ([\d.]+) s",
    "colours within clusters": r"the colours within them in ([\d.]+) s",
    "sample's labels, colour table": r"the sample's labels.* in ([\d.]+) s",
    "label pass": r"labelled and wrote the image in ([\d.]+) s",
    "whole command": r"wrote .*, ([\d.]+) s$",
}


def stages(log: str) -> dict:
    """The seconds of each stage compress logged with -v (wall time, in its own process)."""
    import re

    found = {}
    for name, pattern in _STAGES.items():
        match = re.search(pattern, log, re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    return found


# Imports of a compress run, in the order it needs them, timed in a fresh process: CPU
# time of this process (the imports run on one thread) and wall time.
_IMPORTS = textwrap.dedent(
    """
    import json, time
    marks = [("start", time.perf_counter(), time.process_time())]
    import bigquant.pipeline
    marks.append(("bigquant.pipeline (dask.array, zarr, tifffile)", time.perf_counter(),
                  time.process_time()))
    import sklearn.cluster
    marks.append(("sklearn.cluster (SciPy, by scikit-learn)", time.perf_counter(),
                  time.process_time()))
    from bigquant.fit import dask_ml_kmeans
    dask_ml_kmeans()
    marks.append(("dask_ml.cluster (distributed, dask.dataframe) and numba's start",
                  time.perf_counter(), time.process_time()))
    print(json.dumps([(b[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(marks, marks[1:])]))
    """
)


def bench_imports(repeat: int = 3) -> dict:
    """Median wall and CPU seconds of each import a compress run needs, over ``repeat``
    fresh processes (``python -X importtime`` shows where inside them)."""
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _IMPORTS], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeat)
    ]
    return {
        name: (float(np.median([r[i][1] for r in runs])), float(np.median([r[i][2] for r in runs])))
        for i, (name, *_) in enumerate(runs[0])
    }


def _decodes(src: Path) -> list[list[str]]:
    """The bare decode passes: tifffile's, and bigquant's own reader."""
    return [
        [sys.executable, "-c", f"import tifffile; tifffile.imread({str(src)!r}, maxworkers=2)"],
        [
            sys.executable,
            "-c",
            f"from bigquant.read import open_image; open_image({str(src)!r}).data.max().compute()",
        ],
    ]


def bench_floor(src: Path, work: Path) -> list[dict]:
    """Bare decode passes (tifffile's, and bigquant's own reader), and tifffile writing the
    decoded array with decompress's settings."""
    decode, reader = (measure(command) for command in _decodes(src))
    out = work / "tifffile-write.tif"
    write = measure(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time, tifffile, sys
        a = tifffile.imread({str(src)!r}, maxworkers=2)
        t = time.perf_counter()
        tifffile.imwrite({str(out)!r}, a, tile=(512, 512), photometric="rgb", compression="zlib",
                         compressionargs={{"level": 6}}, predictor=True, bigtiff=True,
                         metadata=None)
        print(time.perf_counter() - t, file=sys.stderr)
    """),
        ]
    )
    return [
        row("tifffile decode", src, decode, note="`tifffile.imread(maxworkers=2)`"),
        row("bigquant reader decode", src, reader, note="`open_image(…).data.max()`"),
        row(
            "tifffile decode + write",
            src,
            write,
            out=out,
            note="decompress reference; write part in stderr",
        ),
    ]


def _rgb2pct(src: Path, out: Path, colors: int) -> list[str] | None:
    """GDAL's rgb2pct.py writing ``out`` (an uncompressed palette TIFF: it takes no creation
    options), or None without GDAL."""
    exe = shutil.which("rgb2pct.py") or shutil.which("rgb2pct")
    return None if exe is None else [exe, "-n", str(colors), "-of", "GTiff", str(src), str(out)]


def bench_gdal(src: Path, work: Path, colors: int) -> list[dict]:
    out = work / f"{src.stem}.gdal.tif"
    command = _rgb2pct(src, out, colors)
    if command is None:
        return [{"tool": "GDAL rgb2pct.py", "note": "skipped: gdal-bin/python3-gdal not installed"}]
    out.unlink(missing_ok=True)
    run = measure(command)
    return [
        row(
            f"GDAL rgb2pct.py -n {colors}",
            src,
            run,
            scores=quality(src, palette_tiff(out)),
            out=out,
        )
    ]


_VIPS = textwrap.dedent(
    """
    import sys, pyvips
    image = pyvips.Image.new_from_file(sys.argv[1], access="sequential")
    image.pngsave(sys.argv[2], palette=True, Q=100, dither=0, bitdepth=int(sys.argv[3]))
    """
)


def bench_vips(src: Path, work: Path, colors: int, cap: float) -> list[dict]:
    """libvips' palette PNG (libimagequant's quantizer, no dithering), as a user of
    ``vips pngsave`` would make it; stopped after ``cap`` seconds."""
    tool = f"libvips pngsave palette, {colors} colours"
    try:
        import pyvips
    except (ImportError, OSError):
        return [{"tool": tool, "note": "skipped: pyvips and pyvips-binary not installed"}]
    bitdepth = max(1, math.ceil(math.log2(colors)))
    if 2**bitdepth != colors or bitdepth > 8:
        return [{"tool": tool, "note": "skipped: libvips' palettes have 2, 4, 16 or 256 colours"}]
    out = work / f"{src.stem}.vips.png"
    out.unlink(missing_ok=True)
    run = measure([sys.executable, "-c", _VIPS, str(src), str(out), str(bitdepth)], timeout=cap)
    if run["code"] != 0:
        out.unlink(missing_ok=True)
        return [row(tool, src, run)]
    # Scored through a tiled TIFF that libvips decodes the PNG into (a PNG has no tiles to
    # read a window of); not timed.
    tiled = work / f"{src.stem}.vips.tif"
    pyvips.Image.new_from_file(str(out), access="sequential").tiffsave(
        str(tiled), tile=True, tile_width=TILE, tile_height=TILE, bigtiff=True
    )
    from bigquant.read import open_image

    try:
        scores = quality(src, open_image(tiled).data)
    finally:
        tiled.unlink()
    return [
        row(tool, src, run, scores=scores, out=out, note="`pngsave(palette=True, Q=100, dither=0)`")
    ]


_PILLOW = textwrap.dedent(
    """
    import json, sys, numpy as np, tifffile
    from PIL import Image
    a = tifffile.imread(sys.argv[1], maxworkers=2)
    method = {"mediancut": Image.Quantize.MEDIANCUT, "fastoctree": Image.Quantize.FASTOCTREE}
    q = Image.fromarray(a).quantize(int(sys.argv[3]), method=method[sys.argv[2]])
    b = np.asarray(q.convert("RGB"))
    mse = sum(float(((a[i:i+1024].astype(np.float32) - b[i:i+1024]) ** 2).sum(dtype=np.float64))
              for i in range(0, len(a), 1024)) / a.size
    print(json.dumps({"psnr": 10 * np.log10(255**2 / mse)}), file=sys.stderr)
    """
)


def bench_pillow(src: Path, colors: int) -> list[dict]:
    rows = []
    for method in ("mediancut", "fastoctree"):
        out = subprocess.run(
            [sys.executable, "-c", _PILLOW, str(src), method, str(colors)],
            capture_output=True,
            text=True,
            check=True,
        )
        psnr = json.loads(out.stderr.strip().splitlines()[-1])["psnr"]
        run = measure([sys.executable, "-c", _PILLOW, str(src), method, str(colors)])
        rows.append(
            row(
                f"Pillow quantize {method}",
                src,
                run,
                psnr=psnr,
                note="in memory; time includes decode",
            )
        )
    return rows


_SKLEARN = textwrap.dedent(
    """
    import sys, numpy as np, tifffile
    from sklearn.cluster import KMeans
    n = int(sys.argv[2])
    a = tifffile.imread(sys.argv[1])[:n, :n].reshape(-1, 3).astype(np.float64)
    KMeans(n_clusters=128, n_init=10, max_iter=200, random_state=0).fit(a)
    """
)


def bench_sklearn(src: Path, side: int = 1024) -> list[dict]:
    run = measure([sys.executable, "-c", _SKLEARN, str(src), str(side)])
    mp = side * side / 1e6
    return [
        row(
            "scikit-learn KMeans(128, n_init=10) all pixels",
            src,
            run,
            megapixels=mp,
            note=f"{side}x{side} crop; {run['seconds'] / mp:.0f} s per MP",
        )
    ]


_DASKML = textwrap.dedent(
    """
    import sys, dask.array as da, zarr, tifffile
    from tifffile.zarr import ZarrTiffStore
    from dask_ml.cluster import KMeans
    tif = tifffile.TiffFile(sys.argv[1])
    x = da.from_zarr(zarr.open_array(ZarrTiffStore(tif.series[0], level=0), mode="r"))
    x = x.rechunk((2048, 2048, 3)).reshape(-1, 3).astype("float64")
    KMeans(n_clusters=int(sys.argv[2])).fit(x)
    """
)


def bench_daskml(src: Path, colors: int, cap: float) -> list[dict]:
    run = measure([sys.executable, "-c", _DASKML, str(src), str(colors)], timeout=cap)
    return [
        row(
            f"dask-ml KMeans({colors}) defaults, full array",
            src,
            run,
            note="fit only, no labels written",
        )
    ]


#: The targets of issue 29: bigquant compress (K = 256) against the decode floor (at 1 GP),
#: its --workers 2 run against threads, and against GDAL's rgb2pct.py (at 100 MP).
#: And decompress to an RGB TIFF with overviews against compress of the same image.
TARGETS = {"floor": 2.2, "threads": 1.25, "gdal": 1.0, "decompress": 1.5}


def rounds(src: Path, work: Path, colors: int, n: int, gdal: bool) -> list[dict]:
    """The ratios behind the targets, from ``n`` more rounds of their commands in turn.

    This machine's speed drifts by 10-20 % within minutes, which one run of
    each command mistakes for a difference: each round runs the decode
    passes, compress on threads, decompress of the store it wrote, compress
    on 2 workers and GDAL one after the other, and its ratios compare those
    neighbours only.
    """
    store, out = work / f"{src.stem}.rounds.zarr", work / f"{src.stem}.rounds.tif"
    decompressed = work / f"{src.stem}.rounds.bq.tif"
    commands = {"threads": _compress(src, store, ["-c", str(colors)])}
    # The store compress just wrote, as an RGB TIFF with overviews (the default).
    commands["decompress"] = [BIGQUANT, "decompress", str(store), str(decompressed),
                              "--overwrite", "-q"]  # fmt: skip
    commands["workers"] = _compress(src, store, ["-c", str(colors), "--workers", "2"])
    rgb2pct = _rgb2pct(src, out, colors) if gdal else None
    if rgb2pct:
        commands["gdal"] = rgb2pct
    found = []
    for _ in range(n):
        floor = min(measure(command)["seconds"] for command in _decodes(src))
        seconds = {}
        for name, command in commands.items():
            out.unlink(missing_ok=True)  # a fresh output each time, as in `bench_gdal`
            seconds[name] = measure(command)["seconds"]
        found.append(
            {
                "floor": seconds["threads"] / floor,
                "threads": seconds["workers"] / seconds["threads"],
                "gdal": seconds["threads"] / seconds["gdal"] if "gdal" in seconds else None,
                "decompress": seconds["decompress"] / seconds["threads"],
            }
        )
    shutil.rmtree(store, ignore_errors=True)
    out.unlink(missing_ok=True)
    decompressed.unlink(missing_ok=True)
    return [{"input_mp": round(_megapixels(src), 1), "rounds": found}]


def ratios(rows: list[dict], colors: int) -> None:
    """Add each input's side-by-side ratios to its rows: ``x_floor`` (wall time over the
    fastest bare decode pass), ``x_threads`` and ``x_gdal`` for bigquant's compress rows."""
    for mp in {r["input_mp"] for r in rows if r.get("input_mp")}:
        same = [r for r in rows if r.get("input_mp") == mp and r.get("seconds")]
        floor = min(r["seconds"] for r in same if r["tool"].endswith("decode"))
        threads = next(r for r in same if r["tool"] == f"bigquant compress -c {colors}")
        gdal = next((r for r in same if r["tool"].startswith("GDAL")), None)
        for r in same:
            if r["tool"].startswith("bigquant compress"):
                r["x_floor"] = round(r["seconds"] / floor, 2)
                r["x_gdal"] = round(r["seconds"] / gdal["seconds"], 2) if gdal else None
            if r["tool"].endswith("--workers 2"):
                r["x_threads"] = round(r["seconds"] / threads["seconds"], 2)


def summary(rows: list[dict], colors: int) -> str:
    """One line per input: the ratios against their targets."""
    lines = []
    for mp in sorted({r["input_mp"] for r in rows if r.get("x_floor")}):
        main = next(r for r in rows if r.get("input_mp") == mp
                    and r["tool"] == f"bigquant compress -c {colors}")  # fmt: skip
        workers = next((r for r in rows if r.get("input_mp") == mp and r.get("x_threads")), {})
        gdal = main.get("x_gdal")  # None without the GDAL peer
        lines.append(
            f"{mp} MP: compress {main['seconds']} s = {main['x_floor']}x the decode floor "
            f"(target {TARGETS['floor']})"
            + (f", {gdal}x GDAL (target {TARGETS['gdal']})" if gdal is not None else "")
            + f"; --workers 2 {workers.get('x_threads')}x threads (target {TARGETS['threads']})"
        )
        same = {r["tool"]: r for r in rows if r.get("input_mp") == mp and r.get("seconds")}
        others = [
            f"{name} {same[tool]['seconds'] / main['seconds']:.2f}x compress{target}"
            for name, tool, target in [
                ("decompress", "bigquant decompress", f" (target {TARGETS['decompress']})"),
                ("libvips", f"libvips pngsave palette, {colors} colours", ""),
            ]
            if tool in same
        ]
        if others:
            lines.append("  " + ", ".join(others))
        found = next((r["rounds"] for r in rows if r.get("input_mp") == mp and "rounds" in r), [])
        spans = []
        for name, against in (("floor", "the decode floor"), ("threads", "threads"),
                              ("gdal", "GDAL"), ("decompress", "compress")):  # fmt: skip
            values = sorted(f[name] for f in found if f.get(name) is not None)
            if values:
                spans.append(
                    f"{np.median(values):.2f}x {against} ({values[0]:.2f}-{values[-1]:.2f})"
                )
        if spans:
            lines.append(f"  over {len(found)} more rounds, median (range): " + ", ".join(spans))
    return "\n".join(lines)


def fixed_costs(rows: list[dict], imports: dict, colors: int) -> str:
    """The imports (a process of their own), then each stage of compress (threads, K =
    ``colors``) at each size, from its -v log: the fixed costs and the label pass."""
    lines = ["| import, in the order compress needs them | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| `{name}` | {wall:.2f} | {cpu:.2f} |" for name, (wall, cpu) in imports.items()]
    runs = [r for r in rows if r.get("tool") == f"bigquant compress -c {colors}" and "stages" in r]
    if runs:
        names = [n for n in _STAGES if any(n in r["stages"] for r in runs)]
        lines += ["", "| stage of `compress`, wall s | " + " | ".join(
            f"{r['input_mp']} MP" for r in runs) + " |", "|---|" + "---|" * len(runs)]  # fmt: skip
        for name in names:
            cells = [str(r["stages"].get(name, "")) for r in runs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_head(head: list[str]) -> list[str]:
    """The first two lines of a Markdown table with the columns ``head``."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def table(rows: list[dict]) -> str:
    head = ["tool", "input MP", "wall s", "× floor", "MP/s", "peak MiB", "PSNR dB", "ΔE_OK"]
    head += ["blurred PSNR dB", "output MiB", "load", "note"]
    keys = ["tool", "input_mp", "seconds", "x_floor", "mp_per_s", "peak_mib", "psnr", "delta_e"]
    keys += ["blurred", "output_mib", "load", "note"]
    lines = markdown_head(head)
    for r in (r for r in rows if "tool" in r):  # not the rounds
        lines.append("| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |")
    return "\n".join(lines)


#: Where the scale section starts in the Markdown file: a run of ``--scale`` alone replaces
#: only what follows it, a run without it only what precedes it.
SCALE_MARK = "<!-- scale section: bench.py --scale -->"


def write_markdown(
    path: Path,
    machine: str,
    rows: list[dict],
    colors: int,
    costs: str | None,
    found: dict | None = None,
) -> None:
    """Write the run's table, ratios and fixed costs, and its scale section, as the Markdown
    file the docs' benchmark page includes (``docs/benchmark_results.md``); keep the part
    this run did not measure."""
    command = "python benchmarks/bench.py " + " ".join(sys.argv[1:])
    head = f"Run of {time.strftime('%Y-%m-%d')} on {machine}, K = {colors}: `{command}`.\n\n"
    old = path.read_text() if path.exists() else ""
    before, _, after = old.partition(SCALE_MARK)
    if rows:
        before = f"{head}{table(rows)}\n\nThe ratios against the speed targets:\n\n"
        before += f"```text\n{summary(rows, colors)}\n```\n\n"
        before += "The fixed costs, from compress's -v log and a process that only imports:\n\n"
        before += f"{costs}\n\n"
    if found:
        after = f"\n\n### At scale: planning and the scheduler\n\n{head}{scale_markdown(found)}\n"
    path.write_text(before + (SCALE_MARK + after if after else ""))


# --- Scale: planning, the scheduler's cost per task, and what they mean at 100 GP ----------

#: Sizes of the virtual images planned, in gigapixels (2048² RGB chunks generated on demand).
SCALE_GP = (1, 10, 100)
#: Chunk side of the virtual images and of the tasks-overhead run.
SCALE_CHUNK = 2048
OVERHEAD_CHUNK = 256
#: Workers the efficiency model is evaluated for.
MODEL_WORKERS = (64, 256)
#: The image the model is evaluated for, in gigapixels.
MODEL_GP = 100


def _virtual_block(block_info=None) -> np.ndarray:
    """A generated 2048² RGB chunk: gradients that depend on where it is (no file read)."""
    info = block_info[None]
    (y0, y1), (x0, x1), _ = info["array-location"]
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    # (3y + 7x, 5y + 3x, 7y + 5x) mod 256, added in uint8 (which wraps mod 256): no
    # temporaries wider than the block, which would count in the run's memory.
    for c, (a, b) in enumerate(((3, 7), (5, 3), (7, 5))):
        ys = (np.arange(y0, y1) * a % 256).astype(np.uint8)
        xs = (np.arange(x0, x1) * b % 256).astype(np.uint8)
        np.add(ys[:, None], xs[None, :], out=out[:, :, c])
    return out


def virtual_image(gigapixels: float, chunk: int = SCALE_CHUNK):
    """A lazy square RGB image of at least ``gigapixels`` (whole `SCALE_CHUNK`² chunks), as
    `bigquant.read.Image` of generated ``chunk``² chunks: read in chunks of another side
    (`Image.with_chunks`), it is generated in those, one task each, as a file is read."""
    import dask.array as da

    from bigquant.read import as_image

    side = math.ceil(math.sqrt(gigapixels * 1e9) / SCALE_CHUNK) * SCALE_CHUNK

    def generated(block: int):
        blocks = (block,) * (side // block) + ((side % block,) if side % block else ())
        return da.map_blocks(
            _virtual_block,
            chunks=(blocks, blocks, (3,)),
            dtype=np.uint8,
            meta=np.empty((0, 0, 0), np.uint8),
            name=f"virtual-{side}-{block}",
        )

    return as_image(generated(chunk), rechunked=generated)


#: 16 colours: a codebook given, so that planning is timed without a fit.
SCALE_CODEBOOK = (np.arange(16)[:, None] * np.array([[16, 9, 5]]) % 256).astype(np.uint8)


def plan(gigapixels: float, work: Path) -> dict:
    """In this process: ``compress(..., compute=False)`` of a virtual image, timed, and the
    graph the scheduler gets, expanded; client peak RSS."""
    import resource

    import dask

    import bigquant
    from bigquant.output import Output

    image = virtual_image(gigapixels)
    data = image.data
    dst = work / f"virtual-{gigapixels:g}.zarr"
    shutil.rmtree(dst, ignore_errors=True)
    started = time.perf_counter()
    run = bigquant.compress(image, dst, codebook=SCALE_CODEBOOK, compute=False, overwrite=True)
    planned = time.perf_counter() - started
    started = time.perf_counter()
    tasks = len(dask.base.collections_to_expr([run]).__dask_graph__())
    expanded = time.perf_counter() - started
    output = Output(dst)
    shutil.rmtree(output.partial, ignore_errors=True)
    Path(output.lock).unlink(missing_ok=True)  # never computed: its claim is this process's
    return {
        "requested": gigapixels,
        "gigapixels": round(data.shape[0] * data.shape[1] / 1e9, 1),
        "chunks": data.numblocks[0] * data.numblocks[1],
        "write_tasks": tasks - 2,  # and the tasks gathering them and finishing the store
        "plan_s": round(planned, 2),
        "expand_s": round(expanded, 2),
        "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _scheduler_cpu(dask_scheduler=None) -> float:
    return time.process_time()


def _timed_run(client, run) -> dict:
    """Compute ``run`` on ``client``: wall time, the scheduler process's CPU time, and from the
    task stream (the scheduler's record of every task) the tasks' compute time and the time
    the workers spent between tasks."""
    from distributed import get_task_stream

    cpu = client.run_on_scheduler(_scheduler_cpu)
    with get_task_stream(client) as stream:
        started = time.perf_counter()
        client.compute(run).result()
        wall = time.perf_counter() - started
    cpu = client.run_on_scheduler(_scheduler_cpu) - cpu
    spans, busy = {}, 0.0
    for task in stream.data:
        for part in task["startstops"]:
            if part["action"] == "compute":
                busy += part["stop"] - part["start"]
                first, last = spans.get(task["worker"], (math.inf, -math.inf))
                spans[task["worker"]] = (min(first, part["start"]), max(last, part["stop"]))
    n = len(stream.data)
    idle = sum(stop - start for start, stop in spans.values()) - busy
    return {"tasks": n, "wall_s": wall, "scheduler_cpu_s": cpu, "compute_s": busy,
            "idle_per_task_ms": 1000 * idle / n}  # fmt: skip


def cluster_costs(work: Path, src: Path, colors: int) -> dict:
    """On a cluster of 2 single-threaded workers (scheduler and workers in processes of their
    own): the scheduler's CPU per task over many small label tasks, and the label work per
    gigapixel over a real image."""
    from distributed import Client

    import bigquant
    import bigquant.write

    state = work / "scale-scheduler.json"
    state.unlink(missing_ok=True)
    common = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen([*common, "scheduler", "--host", "127.0.0.1", "--port", "0",
                          "--no-dashboard", "--scheduler-file", str(state)],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([*common, "worker", "--scheduler-file", str(state), "--nworkers", "2",
                          "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                          "--preload", "bigquant.cluster"], stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        while not state.exists():
            time.sleep(0.1)
        with Client(scheduler_file=str(state)) as client:
            client.wait_for_workers(2)
            # Many small tasks, one chunk each: what the scheduler spends on a task.
            grows = bigquant.write.UNIT_GROWS_AT
            bigquant.write.UNIT_GROWS_AT = 1 << 40
            small = virtual_image(0.27, OVERHEAD_CHUNK).data
            dst = work / "scale-small.zarr"
            try:
                run = bigquant.compress(small, dst, codebook=SCALE_CODEBOOK, client=client,
                                        compute=False, overwrite=True)  # fmt: skip
            finally:
                bigquant.write.UNIT_GROWS_AT = grows
            overhead = _timed_run(client, run)
            overhead["gigapixels"] = small.shape[0] * small.shape[1] / 1e9
            overhead["chunk"] = OVERHEAD_CHUNK
            # A real image, fitted and labelled as `bigquant compress` does: the work.
            dst = work / "scale-real.zarr"
            run = bigquant.compress(src, dst, colors, client=client, compute=False,
                                    overwrite=True)  # fmt: skip
            real = _timed_run(client, run)
            real["gigapixels"] = _megapixels(src) / 1000
        return {"overhead": overhead, "real": real}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
        for name in ("scale-small.zarr", "scale-real.zarr"):
            shutil.rmtree(work / name, ignore_errors=True)


def model(plans: list[dict], costs: dict) -> dict:
    """Per-worker efficiency of labelling a `MODEL_GP` image on N workers.

    work W (core-seconds per gigapixel) from the real run; the scheduler's CPU per task s
    from the small tasks; n the write tasks of a `MODEL_GP` image (from its plan):

        E(N) = (W * G / N) / (W * G / N + n * s)

    The scheduler is one process that handles every task in turn; each of the N workers
    has W * G / N seconds of work. E counts the scheduler's whole time as time the workers
    wait (no overlap): a lower bound.
    """
    real, small = costs["real"], costs["overhead"]
    work = real["compute_s"] / real["gigapixels"]
    per_task = small["scheduler_cpu_s"] / small["tasks"]
    big = next(p for p in plans if p["requested"] == MODEL_GP)
    n, n_chunks, size = big["write_tasks"], big["chunks"], big["gigapixels"]
    out = {"work_core_s_per_gp": round(work, 1), "scheduler_ms_per_task": round(1000 * per_task, 2),
           "write_tasks": n}  # fmt: skip
    side = math.isqrt(n_chunks)  # the virtual images are square
    for unit in (1, 2, 4):
        tasks = math.ceil(side / unit) ** 2
        out[f"write_tasks_{unit}"] = tasks
        for workers in MODEL_WORKERS:
            share = work * size / workers
            out[f"efficiency_{unit}_{workers}"] = round(share / (share + tasks * per_task), 3)
    return out


def scale(work: Path, colors: int) -> dict:
    """The scale section: plans of `SCALE_GP`, each in a process of its own (for its peak
    RSS), the cluster's costs on the 1 GP mosaic, and the model."""
    plans = []
    for gp in SCALE_GP:
        out = subprocess.run(
            [sys.executable, __file__, "--plan", str(gp), "--work", str(work)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        plans.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"planned {plans[-1]}", file=sys.stderr, flush=True)
    costs = cluster_costs(work, make_input(1000), colors)
    return {"plans": plans, "costs": costs, "model": model(plans, costs)}


def scale_markdown(found: dict) -> str:
    """The scale section of docs/benchmark_results.md."""
    lines = ["| image GP | chunks | write tasks | compress(compute=False) s | graph expanded s "
             "| client peak MiB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p in found["plans"]:
        lines.append(f"| {p['gigapixels']} | {p['chunks']} | {p['write_tasks']} | {p['plan_s']} "
                     f"| {p['expand_s']} | {p['peak_mib']} |")  # fmt: skip
    small, real, m = found["costs"]["overhead"], found["costs"]["real"], found["model"]
    lines += [
        "",
        f"On a cluster of 2 single-threaded workers: {small['tasks']} label tasks of "
        f"{OVERHEAD_CHUNK}² px ({small['wall_s']:.1f} s wall) took the scheduler "
        f"{small['scheduler_cpu_s']:.2f} s of CPU "
        f"({m['scheduler_ms_per_task']} ms a task); the workers waited "
        f"{small['idle_per_task_ms']:.2f} ms between tasks. The {real['gigapixels']:.2f} GP "
        f"mosaic's {real['tasks']} tasks computed for {real['compute_s']:.1f} s "
        f"({m['work_core_s_per_gp']} core-seconds a gigapixel; {real['wall_s']:.1f} s wall).",
        "",
        f"Modelled per-worker efficiency E(N) = (W·G/N) / (W·G/N + n·s) at {MODEL_GP} GP "
        f"(bigquant writes it in {m['write_tasks']} tasks), for each write unit:",
        "",
        "| workers | "
        + " | ".join(f"{u} × {u} chunks a task ({m[f'write_tasks_{u}']})" for u in (1, 2, 4))
        + " |",
        "|---|---|---|---|",
    ]
    for workers in MODEL_WORKERS:
        cells = " | ".join(f"{m[f'efficiency_{u}_{workers}']:.1%}" for u in (1, 2, 4))
        lines.append(f"| {workers} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--megapixels", type=float, nargs="+", help="inputs compared (default 100 1000)"
    )
    parser.add_argument("--colors", type=int, default=256)
    parser.add_argument(
        "--peers",
        nargs="*",
        default=["gdal", "vips", "pillow", "sklearn", "daskml"],
        help="peers to run (gdal vips pillow sklearn daskml)",
    )
    parser.add_argument("--daskml-cap", type=float, default=300, help="seconds")
    parser.add_argument(
        "--vips-cap",
        type=float,
        default=600,
        help="seconds libvips may take (at 1 GP it took 225 s and 7.4 GB of memory)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also --space oklab, both --dither methods, 4096 and 65536 colours and "
        "decompress --palette, on the first size",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="then time the decode floor, compress on threads, decompress, compress on 2 "
        "workers and GDAL this many more times in turn, for the ratios' median and range",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale section instead (with --megapixels, as well): planning virtual "
        "images of 1, 10 and 100 GP, the scheduler's cost per task and the label work on a "
        "2-worker cluster, the modelled efficiency at 64 and 256 workers",
    )
    parser.add_argument("--plan", type=float, help=argparse.SUPPRESS)  # one plan, in-process
    parser.add_argument("--work", type=Path, default=CACHE / "work")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write the table and ratios to this Markdown file "
        "(docs/benchmark_results.md is the one the docs include)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.plan:
        print(json.dumps(plan(args.plan, args.work)))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.megapixels is None:
        args.megapixels = [] if args.scale else [100, 1000]

    imports = bench_imports() if args.megapixels else None
    rows = []
    for mp in args.megapixels:
        src = make_input(mp)
        print(f"== {src.name}: {_megapixels(src):.0f} MP", file=sys.stderr, flush=True)
        variants = args.variants and mp == args.megapixels[0]
        runs = [bench_floor(src, args.work), bench_bigquant(src, args.work, args.colors, variants)]
        if "gdal" in args.peers:
            runs.append(bench_gdal(src, args.work, args.colors))
        if "vips" in args.peers:
            runs.append(bench_vips(src, args.work, args.colors, args.vips_cap))
        if "pillow" in args.peers and mp <= 200:
            runs.append(bench_pillow(src, args.colors))
        if "daskml" in args.peers and mp <= 200:
            runs.append(bench_daskml(src, args.colors, args.daskml_cap))
        if "sklearn" in args.peers and mp == args.megapixels[0]:
            runs.append(bench_sklearn(src))
        if args.rounds:
            runs.append(rounds(src, args.work, args.colors, args.rounds, "gdal" in args.peers))
        for new in runs:
            rows += new
    ratios(rows, args.colors)
    found = scale(args.work, args.colors) if args.scale else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (RESULTS / f"bench-{stamp}.json").write_text(
        json.dumps({"machine": machine, "rows": rows, "imports": imports, "scale": found}, indent=1)
    )
    print(f"machine: {machine}\n")
    costs = None
    if rows:
        print(table(rows))
        print()
        print(summary(rows, args.colors))
        costs = fixed_costs(rows, imports, args.colors)
        print()
        print(costs)
    if found:
        print(scale_markdown(found))
    if args.markdown:
        write_markdown(args.markdown, machine, rows, args.colors, costs, found)


if __name__ == "__main__":
    main()
