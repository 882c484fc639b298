"""A fresh machine: PROTRADE_DATA_DIR does not exist yet."""

from __future__ import annotations

from storage_samples import option_rows

from storage.catalog import connect, refresh_catalog
from storage.paths import configure_data_dir
from storage.writer import LakeWriter


def test_views_and_writer_create_a_missing_data_dir(tmp_path, monkeypatch) -> None:
    root = tmp_path / "not" / "yet" / "there"
    configure_data_dir(root)
    conn = connect()
    assert conn.execute("select count(*) from option_chain").fetchall() == [(0,)]
    LakeWriter().write("option_chain", option_rows())
    assert connect().execute("select count(*) from option_chain").fetchall() == [(6,)]


def test_catalog_refresh_creates_a_missing_data_dir(tmp_path, monkeypatch) -> None:
    root = tmp_path / "fresh"
    configure_data_dir(root)
    result = refresh_catalog()
    assert result.path.exists()
    assert "option_chain" in result.views
