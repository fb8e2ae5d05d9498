"""The experiment history: every finished run of every lab, in one SQLite database under the runs folder.

One file (``history.sqlite``), WAL mode, one writer at a time (a lock in this process, SQLite's busy
timeout across processes), every write one transaction: a process killed mid-write leaves the last
committed state. The schema is versioned (``PRAGMA user_version``) and upgraded by the migrations
below in order, never dropping what a person saved. Large results are JSON files beside the database,
referenced by path.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.errors import UserError

DB_NAME = "history.sqlite"

# Each entry upgrades the schema by one version; append, never edit (databases in use have run them).
MIGRATIONS: tuple[str, ...] = (
    # 1: runs and their per-example rows
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, lab TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
        elapsed_s REAL, model TEXT, task TEXT, request TEXT NOT NULL, summary TEXT NOT NULL,
        result_path TEXT);
    CREATE TABLE examples (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, config TEXT NOT NULL, idx INTEGER NOT NULL,
        input TEXT, gold TEXT, prediction TEXT, logprobs TEXT, correct INTEGER,
        PRIMARY KEY (run_id, config, idx));
    CREATE INDEX runs_by_lab ON runs(lab, created);
    """,
    # 2: notes and tags on runs and on examples
    """
    ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT '';
    CREATE TABLE run_tags (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, tag TEXT NOT NULL,
                           PRIMARY KEY (run_id, tag));
    CREATE TABLE example_tags (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
                               tag TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, idx, tag));
    """,
    # 3: who made each run (a browser's id, a user; '' for the CLI and runs from before) and whether it is shared
    """
    ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX runs_by_owner ON runs(owner, created);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class RunRecord:
    id: str
    lab: str
    name: str
    created: float
    elapsed_s: float | None
    model: str | None
    task: str | None
    request: dict
    summary: dict
    result_path: str | None
    note: str
    tags: tuple[str, ...]
    owner: str = ""
    shared: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"tags": list(self.tags)}


@dataclass(frozen=True)
class Example:
    config: str
    idx: int
    input: str
    gold: str
    prediction: str
    logprobs: list[float]
    correct: bool | None
    tags: tuple[str, ...] = ()


class History:
    """The history database. Thread-safe; safe with other processes writing the same file.

    Each run has an owner (``Sessions.owner``: a browser, a user; '' from the CLI). Methods that take a ``viewer``
    show that owner its own runs and those shared with everyone, and refuse changes to another's runs; a viewer of
    None (the CLI, one person's own app, an operator) sees and edits everything.

    A folder that cannot be written (read-only, full) still reads: ``writable`` is False and ``record`` raises a
    ``UserError`` at once, so a lab shows its result and only recording stops."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self._lock = threading.Lock()
        self.writable, self.problem = True, ""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                self._migrate(db)
            finally:
                db.close()
            if not (os.access(self.folder, os.W_OK) and os.access(self.path, os.W_OK)):  # a read-only mount
                raise OSError(30, "Read-only file system")
        except (sqlite3.Error, OSError) as exc:
            self.writable, self.problem = False, f"{exc}"
            if not self._readable():
                raise UserError(f"The experiment history at {self.path} cannot be opened ({exc}). Runs still "
                                "work; they are not recorded until the folder is writable.") from exc

    # ---- plumbing ------------------------------------------------------------------------
    def _readable(self) -> bool:
        """An existing database of this schema that can at least be read."""
        if not self.path.exists():
            return False
        try:
            db = self._connect(write=False)
            try:
                return self.version(db) == SCHEMA_VERSION
            finally:
                db.close()
        except sqlite3.Error:
            return False

    def _connect(self, write: bool = True) -> sqlite3.Connection:
        if write:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # explicit transactions
            db.execute("PRAGMA journal_mode=WAL")
        else:  # reading needs nothing written: works on a read-only or full folder too
            try:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            except sqlite3.Error:  # a WAL database whose folder cannot take its shared-memory file
                db = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, isolation_level=None)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        db.row_factory = sqlite3.Row
        return db

    def unwritable(self) -> str:
        """Why runs are not being recorded, in one sentence; '' when they are."""
        if self.writable:
            return ""
        return (f"Recording has stopped: the history folder {self.folder} cannot be written ({self.problem}). "
                "Results are shown, not saved; earlier runs can still be read.")

    def _refuse_unwritable(self) -> None:
        if not self.writable:
            raise UserError(self.unwritable())

    @staticmethod
    def version(db: sqlite3.Connection) -> int:
        return int(db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, db: sqlite3.Connection) -> None:
        while (v := self.version(db)) < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                if self.version(db) == v:  # another process may have just done it
                    for stmt in (s.strip() for s in MIGRATIONS[v].split(";")):
                        if stmt:
                            db.execute(stmt)
                    db.execute(f"PRAGMA user_version={v + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run the statements as one transaction (all or nothing)."""
        self._refuse_unwritable()
        with self._lock:
            try:
                db = self._connect()
            except (sqlite3.Error, OSError) as exc:
                raise UserError(f"The run could not be saved in the history ({exc}); the result is shown "
                                "but not recorded.") from exc
            try:
                db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                try:
                    db.execute("ROLLBACK") if db.in_transaction else None
                except sqlite3.Error:
                    pass
                raise UserError(f"The run could not be saved in the history ({exc}); the result is shown "
                                "but not recorded.") from exc
            finally:
                db.close()

    # ---- writing -------------------------------------------------------------------------
    def record(self, lab: str, request: dict, summary: dict, *, model: str | None = None,
               task: str | None = None, elapsed_s: float | None = None, name: str | None = None,
               examples: Iterable[Example] = (), result: Any = None, owner: str = "") -> str:
        """Save one finished run (and its per-example rows, and a large result as a file); returns its id."""
        self._refuse_unwritable()
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        path = None
        if result is not None:
            path = self.folder / "history" / f"{run_id}.json"
            tmp = path.with_suffix(".tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(result, default=str))
                tmp.replace(path)  # whole or absent
            except OSError as exc:  # a full or read-only disk: nothing half-written is left behind
                tmp.unlink(missing_ok=True) if tmp.exists() else None
                raise UserError(f"The run could not be saved in the history ({exc}); the result is shown "
                                "but not recorded.") from exc
        stmts = [("INSERT INTO runs (id, lab, name, created, elapsed_s, model, task, request, summary, result_path,"
                  " owner) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                  (run_id, lab, name or f"{lab} {task or ''} {model or ''}".strip(), time.time(), elapsed_s, model,
                   task, json.dumps(request, default=str), json.dumps(summary, default=str),
                   str(path) if path else None, owner or ""))]
        stmts += [("INSERT INTO examples (run_id, config, idx, input, gold, prediction, logprobs, correct)"
                   " VALUES (?,?,?,?,?,?,?,?)",
                   (run_id, e.config, e.idx, e.input, e.gold, e.prediction, json.dumps(e.logprobs),
                    None if e.correct is None else int(e.correct))) for e in examples]
        self._write(stmts)
        return run_id

    def rename(self, run_id: str, name: str, viewer: str | None = None) -> None:
        self._write([("UPDATE runs SET name=? WHERE id=?", (name, self._own(run_id, viewer)))])

    def set_note(self, run_id: str, note: str, viewer: str | None = None) -> None:
        self._write([("UPDATE runs SET note=? WHERE id=?", (note, self._own(run_id, viewer)))])

    def tag(self, run_id: str, tag: str, viewer: str | None = None) -> None:
        self._write([("INSERT OR IGNORE INTO run_tags VALUES (?,?)", (self._own(run_id, viewer), tag.strip()))])

    def share(self, run_id: str, shared: bool = True, viewer: str | None = None) -> None:
        """Show the run to everyone on the server (read-only for them), or stop showing it."""
        self._write([("UPDATE runs SET shared=? WHERE id=?", (int(bool(shared)), self._own(run_id, viewer)))])

    def tag_examples(self, run_id: str, indices: Iterable[int], tag: str, note: str = "",
                     viewer: str | None = None) -> None:
        self._own(run_id, viewer)
        self._write([("INSERT OR REPLACE INTO example_tags VALUES (?,?,?,?)", (run_id, int(i), tag.strip(), note))
                     for i in indices])

    def delete(self, run_id: str, viewer: str | None = None) -> None:
        rec = self.get(run_id, viewer)
        self._own(run_id, viewer)
        self._write([("DELETE FROM runs WHERE id=?", (run_id,))])
        if rec.result_path:
            try:
                Path(rec.result_path).unlink(missing_ok=True)
            except OSError:
                pass  # the row is gone; an undeletable file is only disk space

    # ---- reading -------------------------------------------------------------------------
    def _own(self, run_id: str, viewer: str | None) -> str:
        """The run's id if ``viewer`` may change it (its owner; None: anyone), else a plain refusal."""
        rec = self.get(run_id, viewer)
        if viewer is not None and rec.owner != viewer:
            raise UserError(f"Run {run_id} is someone else's, shared with you read-only: you can reopen and "
                            "export it, not change or delete it.")
        return run_id

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        db = self._connect(write=False)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def _record(self, r: sqlite3.Row) -> RunRecord:
        tags = tuple(t["tag"] for t in self._rows("SELECT tag FROM run_tags WHERE run_id=? ORDER BY tag", (r["id"],)))
        return RunRecord(r["id"], r["lab"], r["name"], r["created"], r["elapsed_s"], r["model"], r["task"],
                         json.loads(r["request"]), json.loads(r["summary"]), r["result_path"], r["note"], tags,
                         r["owner"], bool(r["shared"]))

    def get(self, run_id: str, viewer: str | None = None) -> RunRecord:
        """One run; a viewer sees only its own and shared runs (another's unshared run is 'not found')."""
        rows = self._rows("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows or (viewer is not None and rows[0]["owner"] != viewer and not rows[0]["shared"]):
            raise UserError(f"No run {run_id!r} in the history.")
        return self._record(rows[0])

    def runs(self, lab: str | None = None, model: str | None = None, task: str | None = None,
             tag: str | None = None, text: str | None = None, limit: int = 200,
             viewer: str | None = None) -> list[RunRecord]:
        """Newest first, filtered; a viewer's own runs and those shared with everyone."""
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if viewer is not None:
            sql += " AND (owner=? OR shared=1)"
            args.append(viewer)
        for col, val in (("lab", lab), ("model", model), ("task", task)):
            if val:
                sql += f" AND {col}=?"
                args.append(val)
        if tag:
            sql += " AND id IN (SELECT run_id FROM run_tags WHERE tag=?" \
                   " UNION SELECT run_id FROM example_tags WHERE tag=?)"
            args += [tag, tag]
        if text:
            sql += " AND (name LIKE ? OR note LIKE ?)"
            args += [f"%{text}%", f"%{text}%"]
        sql += " ORDER BY created DESC LIMIT ?"
        return [self._record(r) for r in self._rows(sql, (*args, limit))]

    def examples(self, run_id: str, tag: str | None = None, viewer: str | None = None) -> list[Example]:
        if viewer is not None:
            self.get(run_id, viewer)
        tags: dict[int, list[str]] = {}
        for t in self._rows("SELECT idx, tag FROM example_tags WHERE run_id=?", (run_id,)):
            tags.setdefault(t["idx"], []).append(t["tag"])
        out = [Example(r["config"], r["idx"], r["input"], r["gold"], r["prediction"], json.loads(r["logprobs"]),
                       None if r["correct"] is None else bool(r["correct"]), tuple(sorted(tags.get(r["idx"], ()))))
               for r in self._rows("SELECT * FROM examples WHERE run_id=? ORDER BY config, idx", (run_id,))]
        return [e for e in out if tag is None or tag in e.tags]

    def result(self, run_id: str, viewer: str | None = None) -> Any:
        rec = self.get(run_id, viewer)
        if not rec.result_path:
            return None
        try:
            return json.loads(Path(rec.result_path).read_text())
        except OSError as exc:
            raise UserError(f"The stored result of run {run_id} is missing ({rec.result_path}).") from exc

    def integrity(self) -> str:
        return self._rows("PRAGMA integrity_check")[0][0]
