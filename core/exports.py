"""Export files, one folder per browser session and one sub-folder per call; removed when the session ends.

Nothing is shared between sessions: two people exporting at once get two files. Folders left by a
previous app (a crash, a kill) are removed when the next one starts, once they are a day old.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

MAX_AGE_S = 24 * 3600


class Exports:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "emergence-lab-exports"
        self.root.mkdir(parents=True, exist_ok=True)
        self._prune()

    def folder(self, session: str) -> Path:
        # the session id is a browser-given string: hash it into a safe folder name
        return self.root / hashlib.sha256((session or "local").encode()).hexdigest()[:16]

    def write(self, session: str, name: str, text: str) -> Path:
        """``name`` in a fresh folder of this session's; returns the file's path."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "export.txt"
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
