"""The real ``bigquant`` command: exit codes, one-line errors, nothing left behind."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import cli, run_cli, write_tiff


def assert_clean_failure(result, message: str, code: int = 1):
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    # One line, prefixed, on stderr; nothing on stdout.
    assert result.stderr.strip().splitlines()[-1].startswith("bigquant: error: ")
    assert result.stdout == ""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real store, compressed once through the CLI."""
    from conftest import photo

    where = tmp_path_factory.mktemp("cli")
    src = write_tiff(where / "china.tif", photo("china"))
    result = cli("compress", src, where / "china.zarr", "--colors", 16, "--sample", 20000)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and result.stdout == ""
    return where / "china.zarr"


def test_console_script_is_installed():
    # Beside this interpreter (a venv used without activation), else on PATH.
    exe = shutil.which("bigquant", path=sysconfig.get_path("scripts")) or shutil.which("bigquant")
    assert exe is not None
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "bigquant" in result.stdout


def test_help_imports_no_heavy_modules():
    # --help must answer quickly: dask-ml, zarr, tifffile and dask load only in commands.
    code = (
        "import sys; from click.testing import CliRunner; from bigquant.cli import main; "
        "r = CliRunner().invoke(main, ['compress', '--help']); assert r.exit_code == 0; "
        "print(sorted(m for m in ('dask', 'dask_ml', 'zarr', 'tifffile', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_threaded_runs_do_not_import_distributed(tmp_path, store):
    # dask's first compute imports distributed (seconds) to look for a client, unless told
    # the threads are it; applying a codebook fits nothing, so nothing else imports it.
    src, new = store.parent / "china.tif", tmp_path / "a.zarr"
    commands = [
        ["compress", str(src), str(new), "--codebook", str(store), "-q"],
        ["decompress", str(new), str(tmp_path / "a.tif"), "-q"],
        ["info", str(new), "--check"],
        ["tiles", str(new), str(tmp_path / "tiles"), "-q"],
    ]
    code = (
        "import sys; from click.testing import CliRunner; from bigquant.cli import main; "
        f"rs = [CliRunner().invoke(main, c) for c in {commands!r}]; "
        "assert all(r.exit_code == 0 for r in rs), [r.output for r in rs]; "
        "print('distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_verbose_compress_logs_each_fixed_cost(tmp_path, china_tif):
    # The benchmark reads these lines (benchmarks/bench.py, _STAGES); the numbers are seconds.
    result = cli("compress", china_tif, tmp_path / "a.zarr", "-c", 64, "-v")
    assert result.returncode == 0, result.stderr
    for line in (
        r"read the sample in [\d.]+ s",
        r"init \(k-means\+\+ and scikit-learn's k-means\) in [\d.]+ s",
        r"dask-ml's \d+ iterations in [\d.]+ s",
        r"the sample's labels in [\d.]+ s",
        r"labelled and wrote the image in [\d.]+ s",
    ):
        assert re.search(line, result.stderr), (line, result.stderr)


def test_info_text_and_json(store):
    text = cli("info", store)
    assert text.returncode == 0, text.stderr
    assert "427 x 640 pixels" in text.stdout and "16 (16 requested)" in text.stdout
    assert "PSNR" in text.stdout and "ratio" in text.stdout
    data = json.loads(cli("info", store, "--json").stdout)
    assert data["shape"] == [427, 640, 3] and data["n_colors"] == 16
    assert len(data["codebook"]) == 16 and data["compression_ratio"] > 1
    assert data["raw_bytes"] == 427 * 640 * 3
    group = zarr.open_group(store, mode="r")
    assert data["psnr"] == group.attrs["bigquant"]["psnr"]
    assert data["delta_e"] == group.attrs["bigquant"]["delta_e"] and "ΔE_OK" in text.stdout
    # Piped, the palette swatches read as hex codes, most frequent colour first.
    top = int(np.argmax(data["counts"]))
    hexcode = "#" + "".join(f"{v:02x}" for v in data["codebook"][top])
    swatches = text.stdout.split("palette")[1]
    assert re.search(r"#[0-9a-f]{6}", swatches).group() == hexcode
    assert "\x1b[" not in text.stdout


def test_info_swatches_in_a_terminal(store):
    result = cli("info", store, color=True)
    assert result.returncode == 0, result.stderr
    codebook = json.loads(cli("info", store, "--json").stdout)["codebook"]
    # A 24-bit background escape per colour, in the codebook's own colours.
    for r, g, b in codebook:
        assert f"48;2;{r};{g};{b}m" in result.stdout


def test_commands_leave_logging_as_they_found_it(store):
    log = logging.getLogger("bigquant")
    before = log.handlers[:], log.level, log.propagate
    assert cli("info", store).returncode == 0
    assert cli("info", store / "missing").returncode == 1
    assert (log.handlers[:], log.level, log.propagate) == before


def test_a_command_leaves_dask_config_whole_when_it_first_imports_distributed():
    """A process where a command (a --workers run, say) first imports distributed can
    still start clients afterwards: distributed's config defaults survive the command."""
    code = (
        "import dask.config\n"
        "from bigquant.cli import _logging\n"
        "with _logging(0, 0):\n"
        "    import distributed\n"
        "print(dask.config.get('distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS'))\n"
        "print(dask.config.get('logging', None))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "None"]


def test_preview_and_palette_pictures(store, tmp_path):
    from PIL import Image

    result = cli("preview", store, tmp_path / "p.png", "--max-size", 200)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "p.png") as im:
        assert max(im.size) <= 200 and im.mode == "RGB"
        assert im.size == (160, 107)  # 640 x 427 shrunk by 4, partial edge blocks kept
    result = cli("palette", store, tmp_path / "s.png", "--sort", "count")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "s.png") as im:
        codebook = json.loads(cli("info", store, "--json").stdout)["codebook"]
        corners = {im.getpixel((x * 48 + 47, y * 48 + 47)) for x in range(4) for y in range(4)}
        assert corners == {tuple(c) for c in codebook}
    again = cli("preview", store, tmp_path / "p.png")
    assert_clean_failure(again, "already exists")
    assert_clean_failure(cli("palette", store, tmp_path / "s.jpg"), "must end in .png")


def test_decompress_through_cli(store, tmp_path):
    out = tmp_path / "q.tif"
    result = cli("decompress", store, out, "-q")
    assert result.returncode == 0, result.stderr
    group = zarr.open_group(store, mode="r")
    expected = np.asarray(group.attrs["codebook"], np.uint8)[group["labels"][:]]
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    again = cli("decompress", store, out)
    assert_clean_failure(again, "already exists")
    assert cli("decompress", store, out, "--overwrite").returncode == 0


def test_demo_runs_end_to_end(tmp_path):
    result = cli("demo", "--megapixels", 1, "--colors", 32, "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "MP/s" in result.stdout
    assert (tmp_path / "demo.zarr").is_dir()


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def src(tmp_path, china):
    return write_tiff(tmp_path / "in.tif", china, tile=(64, 64))


def test_missing_source(tmp_path):
    result = run_cli("compress", tmp_path / "nope.tif", tmp_path / "o.zarr")
    assert_clean_failure(result, "nope.tif: no such file or directory")
    assert not (tmp_path / "o.zarr").exists()


def test_directory_that_is_not_an_image(tmp_path):
    (tmp_path / "dir").mkdir()
    result = cli("compress", tmp_path / "dir", tmp_path / "o.zarr")
    assert_clean_failure(result, "not a TIFF file or Zarr array")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.tif").write_text("hello, world\n")
    result = cli("compress", tmp_path / "notes.tif", tmp_path / "o.zarr")
    assert_clean_failure(result, "not a TIFF, PNG, JPEG or Zarr image")
    assert not (tmp_path / "o.zarr").exists()


def test_truncated_tiff(tmp_path, src):
    data = src.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    result = cli("compress", tmp_path / "cut.tif", tmp_path / "o.zarr")
    assert_clean_failure(result, "truncated TIFF")
    assert not (tmp_path / "o.zarr").exists()


def test_tile_that_fails_to_decode_mid_run(tmp_path, src):
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-3], page.databytecounts[-3]
    data = bytearray(src.read_bytes())
    data[offset : offset + count] = b"\xff" * count
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    # A tiny sample may miss the bad tile: then the label pass meets it after the store began.
    result = cli(
        "compress", tmp_path / "bad.tif", tmp_path / "o.zarr", "--sample", 10, "--chunks", 64
    )
    assert_clean_failure(result, "cannot decode pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif", "in.tif"]


@pytest.mark.parametrize("k", ["0", "65537", "-3"])
def test_colors_out_of_range(tmp_path, src, k):
    result = cli("compress", src, tmp_path / "o.zarr", "--colors", k)
    assert_clean_failure(result, "--colors must be between 1 and 65536")


@pytest.mark.parametrize("n", ["0", "-5"])
def test_bad_sample_size(tmp_path, src, n):
    result = cli("compress", src, tmp_path / "o.zarr", "--sample", n)
    assert_clean_failure(result, "--sample must be a positive number")


def test_non_numeric_option_is_a_usage_error(tmp_path, src):
    result = cli("compress", src, tmp_path / "o.zarr", "--colors", "many")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_existing_destination_is_left_untouched(tmp_path, src):
    dst = tmp_path / "o.zarr"
    dst.mkdir()
    (dst / "keep.txt").write_text("data")
    result = cli("compress", src, dst)
    assert_clean_failure(result, "already exists (use --overwrite")
    assert (dst / "keep.txt").read_text() == "data"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((20, 20), np.int32), "unsupported pixel type int32"),
        (np.zeros((20, 20, 3), np.complex64), "unsupported pixel type complex64"),
    ],
)
def test_unsupported_dtype(tmp_path, array, message):
    tifffile.imwrite(tmp_path / "x.tif", array, photometric="minisblack")
    result = cli("compress", tmp_path / "x.tif", tmp_path / "o.zarr")
    assert_clean_failure(result, message)


def test_unsupported_shape(tmp_path):
    z = zarr.create_array(tmp_path / "x.zarr", shape=(2, 3, 4, 5), dtype=np.uint8)
    z[:] = 1
    result = cli("compress", tmp_path / "x.zarr", tmp_path / "o.zarr")
    assert_clean_failure(result, "unsupported image shape")


@pytest.mark.parametrize("command", ["info", "decompress"])
def test_not_a_store(tmp_path, src, command):
    extra = [tmp_path / "out.tif"] if command == "decompress" else []
    result = cli(command, src, *extra)
    assert_clean_failure(result, "not a bigquant store")
    z = zarr.create_array(tmp_path / "plain.zarr", shape=(4, 4), dtype=np.uint8)
    z[:] = 0
    result = cli(command, tmp_path / "plain.zarr", *extra)
    assert_clean_failure(result, "not a bigquant store")
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("command", ["info --check", "decompress", "decompress --palette"])
def test_labels_past_codebook(tmp_path, store, command):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    group = zarr.open_group(broken, mode="r+")
    # A codebook cut short, its metadata to match: caught only when the labels are read.
    meta = {**group.attrs["bigquant"], "n_colors": 3, "counts": None}
    group.attrs.update({"codebook": group.attrs["codebook"][:3], "bigquant": meta})
    command, *flags = command.split()
    extra = [tmp_path / "out.tif"] if command == "decompress" else []
    result = cli(command, broken, *extra, *flags)
    assert_clean_failure(result, "points past the 3-colour codebook")
    assert not (tmp_path / "out.tif").exists()
    assert not (tmp_path / ".out.tif.partial").exists()


def test_info_reads_metadata_only_unless_asked_to_check(tmp_path, store):
    # A store whose labels are gone still describes itself; --check reads them and fails.
    broken = tmp_path / "nolabels.zarr"
    shutil.copytree(store, broken)
    for chunk in (broken / "labels" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    assert cli("info", broken).returncode == 0
    assert_clean_failure(cli("info", broken, "--check"), "corrupt store (cannot read labels")
    assert_clean_failure(cli("decompress", broken, tmp_path / "o.tif"), "corrupt store")


def test_incomplete_store_is_refused(tmp_path, store):
    broken = tmp_path / "half.zarr"
    shutil.copytree(store, broken)
    group = zarr.open_group(broken, mode="r+")
    group.attrs["bigquant"] = {**group.attrs["bigquant"], "complete": False}
    assert_clean_failure(cli("info", broken), "incomplete bigquant store")


def test_cli_defaults_are_the_api_defaults():
    import inspect

    from click.testing import CliRunner

    from bigquant.cli import main
    from bigquant.pipeline import compress

    command = main.commands["compress"]
    options = {p.name: p for p in command.params}
    for name, parameter in inspect.signature(compress).parameters.items():
        if name in options and parameter.default is not inspect.Parameter.empty:
            # What the CLI hands the library when the flag is not given.
            ctx = command.make_context("compress", ["a", "b"])
            assert ctx.params[name] == parameter.default, name
    help_text = CliRunner().invoke(main, ["compress", "--help"], terminal_width=200).output
    assert (
        f"[default: {inspect.signature(compress).parameters['sample_size'].default}]" in help_text
    )


def test_library_errors_name_parameters_and_the_cli_its_flags(tmp_path, src):
    import bigquant
    from bigquant.errors import ParameterError

    with pytest.raises(ParameterError, match="`sample_size` must be a positive number"):
        bigquant.compress(src, tmp_path / "o.zarr", sample_size=0)
    with pytest.raises(ParameterError, match="`max_iter` must be at least 1"):
        bigquant.compress(src, tmp_path / "o.zarr", max_iter=0)
    result = cli("compress", src, tmp_path / "o.zarr", "--max-iter", 0)
    assert_clean_failure(result, "--max-iter must be at least 1, not 0")
    result = cli("compress", src, tmp_path / "o.zarr", "--scheduler", "tcp://x:1", "-w", 2)
    assert_clean_failure(result, "give either --scheduler or --workers, not both")


def test_out_of_memory_hints_name_only_the_commands_own_options(tmp_path, src, store, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("bigquant.pipeline.compress", exhausted)
    monkeypatch.setattr("bigquant.export.decompress", exhausted)
    result = cli("compress", src, tmp_path / "o.zarr")
    assert_clean_failure(result, "out of memory: try smaller --chunks or --sample")
    result = cli("decompress", store, tmp_path / "o.tif")
    assert_clean_failure(result, "out of memory")
    assert "--chunks" not in result.stderr


def test_stores_of_earlier_versions_still_open(tmp_path, store):
    # Format 1 stores written before --space, --dither and --resume existed lack those keys.
    old = tmp_path / "old.zarr"
    shutil.copytree(store, old)
    group = zarr.open_group(old, mode="r+")
    attrs = dict(group.attrs["bigquant"])
    for key in ("space", "dither", "run", "max_iter", "delta_e", "counts"):
        attrs.pop(key)
    attrs["source"] = {**attrs["source"], "added_later": 1}
    group.attrs["bigquant"] = attrs
    result = cli("info", old, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["space"] == "rgb" and data["counts"] is None and data["n_colors"] == 16


def test_overwrite_replaces_only_what_bigquant_writes(tmp_path, store):
    # A file of another kind under each output name: refused with one line, left as it was.
    for command, name, what in [
        ("decompress", "notes.tif", "a TIFF file"),
        ("decompress", "notes.zarr", "a Zarr array"),
        ("preview", "notes.png", "a PNG file"),
        ("compress", "notes.zarr", "a bigquant store"),
    ]:
        out = tmp_path / name
        if command == "compress":
            out.mkdir()
            (out / "thesis.txt").write_text("mine")
            args = (tmp_path / "missing.tif", out)  # refused before the source is opened
        else:
            out.write_text("mine")
            args = (store, out)
        result = cli(command, *args, "--overwrite")
        assert_clean_failure(result, f"{out} is a ")
        assert f"not {what}: --overwrite replaces only {what}; nothing was deleted" in (
            result.stderr
        )
        if command == "compress":
            assert "is a folder holding thesis.txt" in result.stderr
            assert (out / "thesis.txt").read_text() == "mine"
        else:
            assert "is a file that is not" in result.stderr and out.read_text() == "mine"
            out.unlink()
    # What bigquant wrote there is replaced.
    for command, name in [("decompress", "i.tif"), ("decompress", "i.zarr"), ("preview", "i.png")]:
        assert cli(command, store, tmp_path / name).returncode == 0
        result = cli(command, store, tmp_path / name, "--overwrite")
        assert result.returncode == 0, result.stderr


def test_a_claim_held_by_another_run_or_left_by_a_gone_one(tmp_path, store, src):
    dst, lock, host = tmp_path / "c.zarr", tmp_path / ".c.zarr.lock", socket.gethostname()
    # A live run's claim (this process's pid stands for it) stops every writing command at once.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": host, "since": "noon"}))
    for command, args in [
        ("compress", (src, dst)),
        ("decompress", (store, tmp_path / "o.tif")),
        ("preview", (store, tmp_path / "o.png")),
        ("compress", (src, "--into", tmp_path / "in")),  # claimed before the fit
    ]:
        (tmp_path / "in").mkdir(exist_ok=True)
        for name in ("o.tif", "o.png", "in/in.zarr"):
            (tmp_path / name).with_name(f".{Path(name).name}.lock").write_bytes(lock.read_bytes())
        result = cli(command, *args, "--overwrite")
        out = args[-1] / "in.zarr" if "--into" in args else args[1]
        assert_clean_failure(
            result,
            f"bigquant: error: {out.name} is being written by another run (pid {os.getpid()} on "
            f"host {host} since noon); wait for it, or remove {out.parent}/.{out.name}.lock if "
            "that run is gone",
        )
        assert not out.exists()
    # A run that is gone (a pid that ran and ended): taken over by --overwrite or --resume only.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    lock.write_text(json.dumps({"pid": int(gone), "host": host, "since": "noon"}))
    result = cli("compress", src, dst, "-c", 4)
    assert_clean_failure(
        result,
        f"c.zarr was being written by a run that is gone (pid {int(gone)} on host {host} since "
        "noon): resume it (--resume) or start afresh (--overwrite)",
    )
    result = cli("compress", src, dst, "-c", 4, "--overwrite")
    assert result.returncode == 0 and "taking over the claim of a run that is gone" in result.stderr
    assert not lock.exists() and cli("info", dst).returncode == 0
