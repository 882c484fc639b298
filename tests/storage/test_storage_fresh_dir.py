"""A fresh machine: PROTRADE_DATA_DIR does not exist yet."""

from __future__ import annotations

from storage_samples import option_rows

from storage.catalog import connect, refresh_catalog
from storage.writer import LakeWriter


def test_views_and_writer_create_a_missing_data_dir(tmp_path, monkeypatch) -> None:
    root = tmp_path / "not" / "yet" / "there"
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    conn = connect()
    assert conn.execute("select count(*) from option_chain").fetchall() == [(0,)]
    LakeWriter().write("option_chain", option_rows())
    assert connect().execute("select count(*) from option_chain").fetchall() == [(6,)]


def test_catalog_refresh_creates_a_missing_data_dir(tmp_path, monkeypatch) -> None:
    root = tmp_path / "fresh"
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    result = refresh_catalog()
    assert result.path.exists()
    assert "option_chain" in result.views
