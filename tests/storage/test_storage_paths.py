"""Instrument names become exactly one safe path segment, and back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_samples import candle_rows, parquet_files

from storage.errors import InvalidInstrumentName, LakeWriteError
from storage.paths import catalog_path, data_dir, decode_segment, encode_segment, lake_root
from storage.writer import LakeWriter

SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_%-]+")


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("NIFTY", "NIFTY"),
        ("NSE:NIFTY", "NSE%3ANIFTY"),
        ("M&M", "M%26M"),
        ("BAJAJ-AUTO", "BAJAJ-AUTO"),
        ("..", "%2E%2E"),
        ("../x", "%2E%2E%2Fx"),
        ("a/b", "a%2Fb"),
        ("100%", "100%25"),
        ("k=v", "k%3Dv"),
        ("निफ्टी", "%E0%A4%A8%E0%A4%BF%E0%A4%AB%E0%A5%8D%E0%A4%9F%E0%A5%80"),
    ],
)
def test_segment_encoding_round_trips_known_names(name: str, segment: str) -> None:
    assert encode_segment(name) == segment
    assert decode_segment(segment) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "non-empty"),
        ("A\x00B", "NUL"),
        ("X" * 201, "at most 200"),
        ("\ud800", "surrogate"),
        ("€" * 100, "too long once encoded"),
    ],
)
def test_unusable_instrument_names_are_refused_with_a_clear_message(name: str, reason: str) -> None:
    with pytest.raises(InvalidInstrumentName, match=reason):
        encode_segment(name)


def test_invalid_instrument_name_is_a_value_error() -> None:
    assert issubclass(InvalidInstrumentName, ValueError)


@pytest.mark.parametrize("segment", ["", "..", "a/b", "%41", "%3a", "%2", "NSE:NIFTY", "%FF"])
def test_decode_refuses_segments_the_encoder_would_never_write(segment: str) -> None:
    with pytest.raises(InvalidInstrumentName):
        decode_segment(segment)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=250))
def test_any_name_maps_to_one_safe_segment_inside_its_folder_or_is_refused(name: str) -> None:
    try:
        segment = encode_segment(name)
    except InvalidInstrumentName:
        return
    assert SAFE_SEGMENT.fullmatch(segment)
    assert segment not in (".", "..")
    assert decode_segment(segment) == name
    root = Path("/lake/candles")
    folder = root / f"symbol={segment}"
    assert folder.parent == root and len(folder.parts) == len(root.parts) + 1


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_distinct_names_never_share_a_segment(a: str, b: str) -> None:
    if a != b and "\x00" not in a + b:
        assert encode_segment(a) != encode_segment(b)


@pytest.mark.parametrize(
    "hostile", ["../x", "../../etc/passwd", "/", "/abs", ".", "..", "a/../../b", "C:\\x", "~root"]
)
def test_hostile_symbols_are_written_inside_the_dataset_folder(lake: Path, hostile: str) -> None:
    result = LakeWriter(lake).write("candles", candle_rows(symbol=hostile, count=2))
    dataset_root = (lake / "candles").resolve()
    assert result.files
    for key in result.files:
        path = lake.parent / key
        assert path.is_file() and path.resolve().is_relative_to(dataset_root)
        assert decode_segment(path.parent.name.removeprefix("symbol=")) == hostile
    assert all(p.is_relative_to(dataset_root) for p in parquet_files(lake.parent))


def test_a_batch_with_an_unusable_symbol_writes_nothing(lake: Path) -> None:
    rows = candle_rows(symbol="NSE:NIFTY", count=2) + candle_rows(symbol="A\x00B", count=2)
    with pytest.raises(LakeWriteError, match="not usable as a folder name"):
        LakeWriter(lake).write("candles", rows)
    assert parquet_files(lake) == []


def test_the_store_is_the_configured_one_else_data_under_the_working_dir(
    tmp_path, monkeypatch
) -> None:
    from storage.paths import configure_data_dir

    monkeypatch.chdir(tmp_path)
    configure_data_dir(None)
    assert data_dir() == tmp_path.resolve() / "data"
    configure_data_dir("rel/store")
    assert data_dir() == tmp_path.resolve() / "rel" / "store"
    assert data_dir().is_absolute()
    assert lake_root() == tmp_path.resolve() / "rel" / "store" / "lake"
    assert catalog_path(tmp_path / "x") == tmp_path.resolve() / "x" / "protrade.duckdb"


def test_the_data_dir_may_be_a_file_uri(tmp_path) -> None:
    from storage.paths import configure_data_dir, data_dir, lake_root

    configure_data_dir(f"file://{tmp_path}/my%20lake")
    assert data_dir() == tmp_path / "my lake"
    assert lake_root() == tmp_path / "my lake" / "lake"


def test_an_s3_location_is_refused_clearly_where_a_local_folder_is_needed() -> None:
    from storage.errors import UnsupportedLocationError
    from storage.paths import resolve_location

    with pytest.raises(UnsupportedLocationError, match="is on S3, and this needs a local folder"):
        resolve_location("s3://bucket/lake")


def test_an_unknown_scheme_is_refused_clearly() -> None:
    from storage.errors import UnsupportedLocationError
    from storage.paths import store_for

    with pytest.raises(UnsupportedLocationError, match=r"use a local path, a file:// URI or s3://"):
        store_for("gs://bucket/lake")
