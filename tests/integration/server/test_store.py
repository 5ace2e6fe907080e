"""The stores on their own: what they keep, who may read it, what a crash or a bad id leaves."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.server.store import FileStore, KernelStore, SQLiteStore, describe, open_store

RECORD = {"kernel_id": "k1", "provisioner_info": {"connection_info": {"key": "secret"}}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=["file", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    location = {"file": str(tmp_path / "kernels"), "sqlite": str(tmp_path / "kernels.sqlite")}.get(request.param)
    if location is None:
        location = request.getfixturevalue("postgres_url")
    stores: list[KernelStore] = []

    def make(scope: str) -> KernelStore:
        store = open_store(request.param, location, f"{scope}-{os.getpid()}-{id(stores)}")
        assert store is not None
        stores.append(store)
        return store

    yield make
    for store in stores:
        for kernel_id in store.load_all():
            store.delete(kernel_id)
        store.close()


def test_save_load_replace_delete_within_a_scope(make_store) -> None:  # type: ignore[no-untyped-def]
    store, other = make_store("a"), make_store("b")
    store.save("k1", RECORD)
    store.save("k2", {**RECORD, "kernel_id": "k2"})
    store.save("k1", {**RECORD, "version": 2})  # replaced, not added
    assert store.load_all() == {"k1": {**RECORD, "version": 2}, "k2": {**RECORD, "kernel_id": "k2"}}
    assert other.load_all() == {}, "a scope must not see another's kernels"
    store.delete("k1")
    store.delete("never-stored")
    assert list(store.load_all()) == ["k2"]


@pytest.mark.parametrize("kernel_id", ["../escape", "a/b", "", "..", "x" * 200])
def test_ids_that_are_not_plain_names_are_refused(tmp_path: Path, kernel_id: str) -> None:
    store = FileStore(tmp_path / "kernels")
    with pytest.raises(ConfigurationError, match="cannot be stored"):
        store.save(kernel_id, RECORD)
    assert not list(tmp_path.rglob("*.json"))


def test_file_store_is_private_and_survives_a_crash_mid_write(tmp_path: Path) -> None:
    (tmp_path / "kernels" / "default").mkdir(parents=True, mode=0o755)
    store = FileStore(tmp_path / "kernels")
    assert mode(store.folder) == 0o700, "an existing folder must be made private too"
    store.save("k1", RECORD)
    assert mode(store.folder / "k1.json") == 0o600
    # What a kill -9 between writing the temporary file and the rename leaves, and a record damaged otherwise.
    (store.folder / ".tmp-abc.json").write_text('{"kernel_id": "k1", "half')
    (store.folder / "k2.json").write_text("{not json")
    assert store.load_all() == {"k1": RECORD}


def test_sqlite_store_file_is_private(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state" / "kernels.sqlite")
    store.save("k1", RECORD)
    assert mode(tmp_path / "state" / "kernels.sqlite") == 0o600
    store.close()


def test_postgres_password_is_never_shown() -> None:
    pytest.importorskip("psycopg")
    shown = describe("postgres", "postgresql://jupyter:hunter2@db.example:5433/kernels?sslmode=verify-full")
    assert "hunter2" not in shown
    assert "host=db.example" in shown and "dbname=kernels" in shown


def test_unknown_store_and_missing_postgres_location_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not one of file, sqlite, postgres, none"):
        open_store("redis", str(tmp_path), "default")
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigurationError, match="needs store_path"):
        open_store("postgres", "", "default")
