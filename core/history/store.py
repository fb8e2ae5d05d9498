"""The experiment history: every finished run of every lab, in one SQLite database under the runs folder.

One file (``history.sqlite``), WAL mode, one writer at a time (a lock in this process, SQLite's busy
timeout across processes), every write one transaction: a process killed mid-write leaves the last
committed state. The schema is versioned (``PRAGMA user_version``) and upgraded by the migrations
below in order, never dropping what a person saved. Large results are JSON files beside the database,
referenced by path.
"""
from __future__ import annotations

import json
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
    """The history database. Thread-safe; safe with other processes writing the same file."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self._lock = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                self._migrate(db)
        except (sqlite3.Error, OSError) as exc:
            raise UserError(f"The experiment history at {self.path} cannot be opened ({exc}). Runs still work; "
                            "they are not recorded until the folder is writable.") from exc

    # ---- plumbing ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # explicit transactions
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        db.row_factory = sqlite3.Row
        return db

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
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                db.execute("ROLLBACK") if db.in_transaction else None
                raise UserError(f"The run could not be saved in the history ({exc}); the result is shown "
                                "but not recorded.") from exc
            finally:
                db.close()

    # ---- writing -------------------------------------------------------------------------
    def record(self, lab: str, request: dict, summary: dict, *, model: str | None = None,
               task: str | None = None, elapsed_s: float | None = None, name: str | None = None,
               examples: Iterable[Example] = (), result: Any = None) -> str:
        """Save one finished run (and its per-example rows, and a large result as a file); returns its id."""
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        path = None
        if result is not None:
            path = self.folder / "history" / f"{run_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, default=str))
            tmp.replace(path)  # whole or absent
        stmts = [("INSERT INTO runs (id, lab, name, created, elapsed_s, model, task, request, summary, result_path)"
                  " VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (run_id, lab, name or f"{lab} {task or ''} {model or ''}".strip(), time.time(), elapsed_s, model,
                   task, json.dumps(request, default=str), json.dumps(summary, default=str),
                   str(path) if path else None))]
        stmts += [("INSERT INTO examples (run_id, config, idx, input, gold, prediction, logprobs, correct)"
                   " VALUES (?,?,?,?,?,?,?,?)",
                   (run_id, e.config, e.idx, e.input, e.gold, e.prediction, json.dumps(e.logprobs),
                    None if e.correct is None else int(e.correct))) for e in examples]
        self._write(stmts)
        return run_id

    def rename(self, run_id: str, name: str) -> None:
        self._write([("UPDATE runs SET name=? WHERE id=?", (name, self._known(run_id)))])

    def set_note(self, run_id: str, note: str) -> None:
        self._write([("UPDATE runs SET note=? WHERE id=?", (note, self._known(run_id)))])

    def tag(self, run_id: str, tag: str) -> None:
        self._write([("INSERT OR IGNORE INTO run_tags VALUES (?,?)", (self._known(run_id), tag.strip()))])

    def tag_examples(self, run_id: str, indices: Iterable[int], tag: str, note: str = "") -> None:
        self._known(run_id)
        self._write([("INSERT OR REPLACE INTO example_tags VALUES (?,?,?,?)", (run_id, int(i), tag.strip(), note))
                     for i in indices])

    def delete(self, run_id: str) -> None:
        rec = self.get(run_id)
        self._write([("DELETE FROM runs WHERE id=?", (run_id,))])
        if rec.result_path:
            Path(rec.result_path).unlink(missing_ok=True)

    # ---- reading -------------------------------------------------------------------------
    def _known(self, run_id: str) -> str:
        self.get(run_id)
        return run_id

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def _record(self, r: sqlite3.Row) -> RunRecord:
        tags = tuple(t["tag"] for t in self._rows("SELECT tag FROM run_tags WHERE run_id=? ORDER BY tag", (r["id"],)))
        return RunRecord(r["id"], r["lab"], r["name"], r["created"], r["elapsed_s"], r["model"], r["task"],
                         json.loads(r["request"]), json.loads(r["summary"]), r["result_path"], r["note"], tags)

    def get(self, run_id: str) -> RunRecord:
        rows = self._rows("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise UserError(f"No run {run_id!r} in the history.")
        return self._record(rows[0])

    def runs(self, lab: str | None = None, model: str | None = None, task: str | None = None,
             tag: str | None = None, text: str | None = None, limit: int = 200) -> list[RunRecord]:
        """Newest first, filtered."""
        sql, args = "SELECT * FROM runs WHERE 1=1", []
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

    def examples(self, run_id: str, tag: str | None = None) -> list[Example]:
        tags: dict[int, list[str]] = {}
        for t in self._rows("SELECT idx, tag FROM example_tags WHERE run_id=?", (run_id,)):
            tags.setdefault(t["idx"], []).append(t["tag"])
        out = [Example(r["config"], r["idx"], r["input"], r["gold"], r["prediction"], json.loads(r["logprobs"]),
                       None if r["correct"] is None else bool(r["correct"]), tuple(sorted(tags.get(r["idx"], ()))))
               for r in self._rows("SELECT * FROM examples WHERE run_id=? ORDER BY config, idx", (run_id,))]
        return [e for e in out if tag is None or tag in e.tags]

    def result(self, run_id: str) -> Any:
        rec = self.get(run_id)
        if not rec.result_path:
            return None
        try:
            return json.loads(Path(rec.result_path).read_text())
        except OSError as exc:
            raise UserError(f"The stored result of run {run_id} is missing ({rec.result_path}).") from exc

    def integrity(self) -> str:
        return self._rows("PRAGMA integrity_check")[0][0]
