"""Forged store metadata: every value checked on open, one line naming the field, no traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import cli, photo, write_tiff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bigquant
from bigquant.errors import BigquantError
from bigquant.store import SourceInfo, StoreMeta


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A real store of a 256 x 256 photograph in 8 colours, four chunks; written once."""
    where = tmp_path_factory.mktemp("meta")
    src = write_tiff(where / "a.tif", photo("astronaut")[128:384, 128:384])
    bigquant.compress(src, where / "a.zarr", 8, sample_size=5_000, chunks=128, max_iter=3)
    return where / "a.zarr"


def forged(store: Path, where: Path, change) -> Path:
    """A copy of ``store`` whose root attributes ``change(attrs)`` has edited in place."""
    copy = where / "forged.zarr"
    shutil.copytree(store, copy)
    meta = json.loads((copy / "zarr.json").read_text())
    change(meta["attributes"])
    # Python's json: NaN, infinities and huge integers, as a hand-edited file may hold.
    (copy / "zarr.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("value", [-900, 300, 1e30, 2.5, True, "12"])
def test_a_codebook_value_no_uint8_holds_is_named(small_store, tmp_path, value):
    def change(attrs):
        attrs["codebook"][2][1] = value

    store = forged(small_store, tmp_path, change)
    for command, *args in [("info", "--check"), ("decompress", tmp_path / "o.tif")]:
        result = cli(command, store, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == (
            f"bigquant: error: {store}: corrupt store (codebook row 2 holds {value!r}"
            + (", not a uint8 value)\n" if not isinstance(value, (bool, str)) else ")\n")
        )


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("bigquant", "counts", [1, 2]),
            "counts are not 8 pixel counts adding up to the image's 65536",
        ),
        (("bigquant", "nodata_label", 3), "nodata_label is 3: the codebook's last row, 8, or none"),
        (
            ("source", "shape", [10, 10, 3]),
            "labels have shape (256, 256), source.shape says [10, 10]",
        ),
        (
            ("bigquant", "n_colors", 9),
            "counts are not 9 pixel counts adding up to the image's 65536",
        ),
        (("bigquant", "mse", float("nan")), "mse is nan"),
    ],
)
def test_a_forged_field_is_named(small_store, tmp_path, edit, message):
    store = forged(small_store, tmp_path, lambda attrs: apply(edit, attrs))
    result = cli("info", store)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"bigquant: error: {store}: corrupt store ({message})\n"


#: Anything JSON can hold, and what Python's json writes beyond it (NaN, infinities).
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["nan", "rgb", "minisblack", "uint8", "float32", "collection"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
META_FIELDS = [f.name for f in dataclasses.fields(StoreMeta) if f.name != "source"]
SOURCE_FIELDS = [f.name for f in dataclasses.fields(SourceInfo)]
DELETE = object()

EDITS = st.one_of(
    st.tuples(st.just("codebook"), st.integers(0, 7), st.integers(0, 2), VALUES),
    st.tuples(st.just("codebook"), VALUES),
    st.tuples(st.just("bigquant"), st.sampled_from(META_FIELDS), VALUES | st.just(DELETE)),
    st.tuples(st.just("source"), st.sampled_from(SOURCE_FIELDS), VALUES | st.just(DELETE)),
)


def apply(edit, attrs) -> None:
    """Set (or delete) one value of a store's attributes."""
    *where, value = edit
    if where[0] == "codebook":
        if len(where) == 1:
            attrs["codebook"] = value
        else:  # unless an earlier edit left no such row
            with contextlib.suppress(IndexError, KeyError, TypeError):
                attrs["codebook"][where[1]][where[2]] = value
        return
    holder = attrs["bigquant"] if where[0] == "bigquant" else attrs["bigquant"]["source"]
    if value is DELETE:
        holder.pop(where[1], None)
    else:
        holder[where[1]] = value


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(edits=st.lists(EDITS, min_size=1, max_size=2))
def test_forged_metadata_works_or_fails_in_one_line(small_store, edits):
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        store = forged(small_store, where, lambda attrs: [apply(e, attrs) for e in edits])
        outcomes = []
        for run in (
            lambda: bigquant.open_store(store),
            lambda: bigquant.decompress(store, where / "o.tif", overviews=False),
            lambda: bigquant.preview(store, where / "p.png", max_size=64),
        ):
            try:
                run()
                outcomes.append(True)
            except BigquantError:
                outcomes.append(False)
        result = cli("info", store, "--check")
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr
        if result.returncode:
            assert result.stderr.startswith("bigquant: error: ") and result.stderr.count("\n") == 1
        # A store that opens is one every command reads; one that does not, none does.
        assert outcomes in ([True] * 3, [False] * 3), outcomes
        assert result.returncode == (0 if outcomes[0] else 1), result.stderr


def test_every_field_round_trips_through_open_store(tmp_path):
    # A store written with no field at its default (where a run can set it), read back by
    # open_store: each field comes back as compress returned it, under a key of its own name.
    image = photo("astronaut")[:200, :300].copy()
    image[:20, :20] = 0  # pixels without data
    src = write_tiff(tmp_path / "a.tif", image, extratags=[(42113, "s", 0, "0", True)])
    written = bigquant.compress(
        src, tmp_path / "a.zarr", 12, sample_size=4_000, seed=5, chunks=128, max_iter=4,
        space="oklab", dither="ordered", pyramid=True, zarr_format=2,
    )  # fmt: skip
    opened = bigquant.open_store(tmp_path / "a.zarr").meta
    with open(tmp_path / "a.zarr" / ".zattrs") as f:
        raw = json.load(f)["bigquant"]
    assert list(raw) == [f.name for f in dataclasses.fields(StoreMeta)]
    for field in dataclasses.fields(StoreMeta):
        assert getattr(opened, field.name) == getattr(written, field.name), field.name
        if field.name not in ("format_version", "bigquant_version", "codebook_from"):
            default = field.default_factory() if callable(field.default_factory) else field.default
            assert getattr(written, field.name) != default, f"{field.name} left at its default"
    assert list(raw["source"]) == [f.name for f in dataclasses.fields(SourceInfo)]
    for field in dataclasses.fields(SourceInfo):
        assert getattr(opened.source, field.name) == getattr(written.source, field.name)
    assert opened.source.nodata == 0 and opened.nodata_label == 12
