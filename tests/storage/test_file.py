"""What only the file backend does: where its files are, and refusing what it cannot open.
The protocol itself is checked by ``test_contract.py``."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys

import pytest
import trio

from tests.conftest import EXAMPLES
from triograph.core.errors import ConfigError
from triograph.core.settings import Settings
from triograph.storage.file import MIGRATIONS, open_file_storage


def cli(*args: str, cwd: pathlib.Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIOGRAPH_STORAGE"}
    return subprocess.Popen(
        [sys.executable, "-m", "triograph.core.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )


async def test_a_path_that_cannot_be_opened_is_a_config_error(tmp_path: pathlib.Path) -> None:
    spec = f"file:{tmp_path / 'missing' / 'db.sqlite'}"
    with pytest.raises(ConfigError, match=r"cannot open '.*/missing/db\.sqlite'"):
        async with open_file_storage(spec, Settings()):
            pass
    with pytest.raises(ConfigError, match="file:PATH"):
        async with open_file_storage("file:", Settings()):
            pass


async def test_a_database_of_a_newer_triograph_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    async with open_file_storage(f"file:{path}", Settings()):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        async with open_file_storage(f"file:{path}", Settings()):
            pass


async def test_serve_keeps_everything_in_the_working_directory(tmp_path: pathlib.Path) -> None:
    proc = cli("serve", "--config", str(EXAMPLES / "langgraph.json"), "--port", "0", cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("triograph serving "):
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line, "the server exited before serving"
        assert line.rstrip().endswith("(storage: file:./triograph.sqlite)"), line
        names = {p.name for p in await trio.Path(tmp_path).iterdir()}
        assert {
            "triograph.sqlite",
            "triograph.sqlite-checkpoints",
            "triograph.sqlite-store",
        } <= names
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 0


async def test_serve_exits_2_naming_a_file_it_cannot_open(tmp_path: pathlib.Path) -> None:
    spec = f"file:{tmp_path / 'missing' / 'db.sqlite'}"
    config = str(EXAMPLES / "langgraph.json")
    proc = cli("serve", "--config", config, "--port", "0", "--storage", spec, cwd=tmp_path)
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2, out
    assert f"triograph: Lifespan failure in startup. 'storage {spec!r}: cannot open" in out
