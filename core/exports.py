"""Export files, one folder per browser session and one sub-folder per call; removed when the session ends.

Nothing is shared between sessions: two people exporting at once get two files. Folders left by a
previous app (a crash, a kill) are removed when the next one starts, once they are a day old.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

MAX_AGE_S = 24 * 3600
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)


def safe_cell(value):
    """A CSV cell a spreadsheet shows as text: a string starting with = + - @, a tab or a carriage return gets a
    leading apostrophe (OWASP's advice). Plain numbers, negative ones included, stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.match(value.strip()):
        return "'" + value
    return value


def csv_text(header: list | None, rows) -> str:
    """Rows as CSV text with every cell made safe (``safe_cell``)."""
    buf = io.StringIO()
    w = csv.writer(buf)  # RFC 4180 line ends: a cell holding a carriage return is quoted too
    if header is not None:
        w.writerow([safe_cell(h) for h in header])
    for row in rows:
        w.writerow([safe_cell(c) for c in row])
    return buf.getvalue()


def safe_csv(text: str) -> str:
    """CSV text written by any means (pandas, csv) re-written with every cell made safe."""
    try:
        return csv_text(None, list(csv.reader(io.StringIO(text, newline=""))))
    except csv.Error:  # not parseable as CSV: escape every line that starts like a formula
        return "".join(safe_cell(line) for line in text.splitlines(keepends=True))


class Exports:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "emergence-lab-exports"
        self.root.mkdir(parents=True, exist_ok=True)
        self._prune()

    def folder(self, session: str) -> Path:
        # the session id is a browser-given string: hash it into a safe folder name
        return self.root / hashlib.sha256((session or "local").encode()).hexdigest()[:16]

    def write(self, session: str, name: str, text: str) -> Path:
        """``name`` in a fresh folder of this session's; returns the file's path. Every CSV is made safe to open
        in a spreadsheet here, whoever wrote it (``safe_csv``); other formats (JSON) are written exactly."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "export.txt"
        if safe.lower().endswith(".csv"):
            text = safe_csv(text)
        path = self.folder(session) / uuid.uuid4().hex[:12] / safe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def drop(self, session: str) -> None:
        shutil.rmtree(self.folder(session), ignore_errors=True)

    def _prune(self) -> None:
        now = time.time()
        for d in self.root.iterdir():
            try:
                if now - d.stat().st_mtime > MAX_AGE_S:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
