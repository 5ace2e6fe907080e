"""Where the server extension keeps what it needs to reattach its kernels: one record per kernel, by kernel id.

A record holds the kernel's connection info (with its HMAC key) and the agent's launch token, so every store keeps
records readable by the server's user only. The methods are blocking: the extension calls them in a worker thread,
never on the server's event loop.

- :class:`FileStore` (the default): one JSON file per kernel in a 0700 folder, each file 0600 and replaced atomically
  (written to a temporary file in the same folder, then ``os.replace``), so a crash leaves the old record or the new
  one, never half of one.
- :class:`SQLiteStore`: one SQLite file, for one host, shared by the servers that run there.
- :class:`PostgresStore`: a table in a PostgreSQL database, for servers on several hosts (replicas, a server pod that
  moves between nodes). Needs ``psycopg`` (the ``server-postgres`` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError

_KERNEL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # kernel ids become file names: no separators, no '..'


def _checked_id(kernel_id: str) -> str:
    if not _KERNEL_ID.match(kernel_id) or kernel_id in (".", ".."):
        raise ConfigurationError(f"kernel id {kernel_id!r} cannot be stored: use letters, digits, '-', '_' or '.'")
    return kernel_id


class KernelStore(ABC):
    """Records by kernel id, within one ``scope`` (the server's name: servers sharing a store each use their own)."""

    @abstractmethod
    def save(self, kernel_id: str, record: dict[str, Any]) -> None:
        """Create or replace ``kernel_id``'s record."""

    @abstractmethod
    def delete(self, kernel_id: str) -> None:
        """Forget ``kernel_id`` (no error when there is no record)."""

    @abstractmethod
    def load_all(self) -> dict[str, dict[str, Any]]:
        """Every record of this scope, by kernel id. An unreadable record is skipped, not fatal."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing open
        """Release what the store holds open."""

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` in one line for the log, without anything secret the store's driver may have quoted."""
        return " ".join(str(exc).split())


class FileStore(KernelStore):
    """``<folder>/<scope>/<kernel_id>.json``; the folders are made 0700, the files 0600."""

    def __init__(self, folder: str | Path, scope: str = "default") -> None:
        self.folder = Path(folder) / _checked_id(scope)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # mkdir's mode is masked by the umask, and an existing folder keeps its own

    def _path(self, kernel_id: str) -> Path:
        return self.folder / f"{_checked_id(kernel_id)}.json"

    def save(self, kernel_id: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.folder)  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # the rename must not reach the disk before the data (kill -9, power loss)
            os.replace(tmp, self._path(kernel_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, kernel_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(kernel_id).unlink()

    def load_all(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith(".tmp-"):
                continue  # a write a crash interrupted; the previous record, if any, is intact
            with contextlib.suppress(OSError, ValueError):
                records[path.stem] = json.loads(path.read_bytes())
        return records


class SQLiteStore(KernelStore):
    """One table ``kernels(scope, kernel_id, record)`` in an SQLite file (0600), for the servers of one host."""

    def __init__(self, path: str | Path, scope: str = "default") -> None:
        self.path = Path(path)
        self.scope = _checked_id(scope)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()  # one connection, used from the extension's worker threads in turn
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers in other servers do not block a writer
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kernels (scope TEXT NOT NULL, kernel_id TEXT NOT NULL, record TEXT NOT NULL, "
            "saved_at REAL NOT NULL DEFAULT (julianday('now')), PRIMARY KEY (scope, kernel_id))"
        )

    def save(self, kernel_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kernels (scope, kernel_id, record) VALUES (?, ?, ?)",
                (self.scope, _checked_id(kernel_id), json.dumps(record, sort_keys=True)),
            )

    def delete(self, kernel_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kernels WHERE scope = ? AND kernel_id = ?", (self.scope, kernel_id))

    def load_all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT kernel_id, record FROM kernels WHERE scope = ?", (self.scope,)).fetchall()
        records: dict[str, dict[str, Any]] = {}
        for kernel_id, text in rows:
            with contextlib.suppress(ValueError):
                records[kernel_id] = json.loads(text)
        return records

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresStore(KernelStore):
    """Table ``gateway_provisioners_kernels`` in a PostgreSQL database; ``conninfo`` is a libpq connection string or
    URL. Keep the password out of it (libpq reads ``~/.pgpass`` and ``PGPASSWORD``); it is never logged anyway.

    One short connection per operation: operations are rare (a start, a restart, a shutdown, one read at start-up),
    and nothing has to notice a database restart in between.
    """

    TABLE = "gateway_provisioners_kernels"

    def __init__(self, conninfo: str, scope: str = "default", connect_timeout: float = 10) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                "the postgres store needs psycopg: pip install 'gateway_provisioners[server-postgres]'"
            ) from None
        if not conninfo.strip():
            raise ConfigurationError("the postgres store needs store_path: a PostgreSQL URL or connection string")
        self._psycopg = psycopg
        self.conninfo = conninfo
        self.scope = _checked_id(scope)
        self.connect_timeout = connect_timeout
        try:
            with self._connect() as db:
                self._create_table(db)
        except psycopg.Error as exc:
            raise ConfigurationError(f"cannot use the PostgreSQL store {describe('postgres', conninfo)}: "
                                     f"{self.describe_error(exc)}") from None  # fmt: skip

    def _create_table(self, db: Any) -> None:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.TABLE} (scope TEXT NOT NULL, kernel_id TEXT NOT NULL, "
            "record TEXT NOT NULL, saved_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (scope, kernel_id))"
        )

    def describe_error(self, exc: BaseException) -> str:
        """``exc``'s text in one line, without the connection string or its password (libpq may quote either)."""
        text = " ".join(str(exc).split())
        secrets = [self.conninfo]
        try:
            from psycopg.conninfo import conninfo_to_dict

            secrets.append(str(conninfo_to_dict(self.conninfo).get("password") or ""))
        except Exception:
            pass
        for secret in filter(None, secrets):
            text = text.replace(secret, "(store_path)")
        return text

    def _connect(self) -> Any:
        return self._psycopg.connect(self.conninfo, autocommit=True, connect_timeout=int(self.connect_timeout))

    def save(self, kernel_id: str, record: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                f"INSERT INTO {self.TABLE} (scope, kernel_id, record) VALUES (%s, %s, %s) "
                "ON CONFLICT (scope, kernel_id) DO UPDATE SET record = EXCLUDED.record, saved_at = now()",
                (self.scope, _checked_id(kernel_id), json.dumps(record, sort_keys=True)),
            )

    def delete(self, kernel_id: str) -> None:
        with self._connect() as db:
            db.execute(f"DELETE FROM {self.TABLE} WHERE scope = %s AND kernel_id = %s", (self.scope, kernel_id))

    def load_all(self) -> dict[str, dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(f"SELECT kernel_id, record FROM {self.TABLE} WHERE scope = %s", (self.scope,)).fetchall()
        records: dict[str, dict[str, Any]] = {}
        for kernel_id, text in rows:
            with contextlib.suppress(ValueError):
                records[kernel_id] = json.loads(text)
        return records


def describe(kind: str, location: str) -> str:
    """The store for the log: a PostgreSQL connection string without its password."""
    if kind != "postgres":
        return location
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(location)
    except Exception:
        return "(connection string not shown)"
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()) if k in ("host", "port", "dbname", "user"))


STORES = ("file", "sqlite", "postgres", "none")


def open_store(kind: str, location: str, scope: str) -> KernelStore | None:
    """The store named ``kind`` at ``location`` (a folder for ``file``, a file for ``sqlite``, a connection string for
    ``postgres``); ``none``: no store."""
    if kind == "none":
        return None
    if kind == "file":
        return FileStore(location, scope)
    if kind == "sqlite":
        return SQLiteStore(location, scope)
    if kind == "postgres":
        return PostgresStore(location, scope)
    raise ConfigurationError(f"store {kind!r} is not one of {', '.join(STORES)}")
