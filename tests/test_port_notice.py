"""The otlp_port_taken notice names both stores by absolute path, whatever the processes' --db."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from tests.conftest import ServeProcess
from traceproof.server.stdio import port_taken_notice
from traceproof.settings import Settings
from traceproof.storage import Store


@pytest.mark.slow
def test_the_port_taken_notice_names_both_stores_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "quickstart")  # the other server runs here, on a relative --db
    other = ServeProcess(Path(".traceproof/traceproof.duckdb"))
    try:
        info = httpx2.get(other.url + "/api/v1/info").json()
        monkeypatch.chdir(tmp_path / "project")
        settings = Settings(db=Path(".traceproof/traceproof.duckdb"), port=other.port)
        with Store.open(settings.db, settings) as store:
            notice = port_taken_notice(store, settings)
    finally:
        other.stop()
    assert info["store"] == str(tmp_path / "quickstart" / ".traceproof" / "traceproof.duckdb")
    assert notice.startswith("[otlp_port_taken] ")
    assert f"serving {tmp_path / 'quickstart' / '.traceproof' / 'traceproof.duckdb'})" in notice
    assert f"reads {tmp_path / 'project' / '.traceproof' / 'traceproof.duckdb'} " in notice
