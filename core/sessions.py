"""What the server keeps per browser session: the session's active model and the owner of its History.

A *session* is one page load (Gradio's session hash; an API client's own). An *owner* outlives sessions: a
browser's id kept in its local storage (``gr.BrowserState``), or the user name on a server with logins. On a
server several people share (``AppConfig.per_user``) the History shows an owner its own runs and the runs
others shared; on one person's own machine (and from the CLI) it shows everything, as it always did.
"""
from __future__ import annotations

import re
import secrets
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

MAX_SESSIONS = 10_000          # remembered at once; the least recently seen is forgotten first
_BROWSER_ID = re.compile(r"^[0-9a-f]{32}$")


def browser_secret(folder: Path) -> str:
    """The key browsers' stored owner ids are sealed with, kept in the runs folder so that a restart keeps every
    browser's History; a fresh one for this run of the app when the folder cannot be written."""
    path = Path(folder) / ".browser-state-key"
    try:
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(16)
        path.write_text(key)
        path.chmod(0o600)
        return key
    except OSError:
        return secrets.token_hex(16)


def new_browser_id() -> str:
    return uuid.uuid4().hex


def valid_browser_id(value) -> bool:
    """A browser's owner id as this server makes them (a client cannot pick a name such as another's user)."""
    return isinstance(value, str) and bool(_BROWSER_ID.match(value))


class Sessions:
    """Session -> (active model, owner). Thread-safe and bounded."""

    def __init__(self, operators: tuple[str, ...] = ()):
        self._state: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.operators = tuple(f"user:{u}" for u in operators)

    def _entry(self, session: str) -> dict:
        entry = self._state.setdefault(session, {})
        self._state.move_to_end(session)
        while len(self._state) > MAX_SESSIONS:
            self._state.popitem(last=False)
        return entry

    # ---- owners --------------------------------------------------------------------------
    def bind_owner(self, session: str, browser_id: str | None = None, user: str | None = None) -> str:
        """The owner of the session's runs: the logged-in user, else the browser's id (a new one if it has none
        or sent one this server did not make). Returns the browser id to keep (None on a login server)."""
        with self._lock:
            entry = self._entry(session or "")
            if user:
                entry["owner"] = f"user:{user}"
                return None
            bid = browser_id if valid_browser_id(browser_id) else new_browser_id()
            entry["owner"] = f"browser:{bid}"
            return bid

    def owner(self, session: str) -> str:
        """Who owns what this session records: its bound owner; an API client's own session; '' for the CLI and
        notebooks (no session)."""
        if not session:
            return ""
        with self._lock:
            entry = self._state.get(session)
            return (entry or {}).get("owner") or f"session:{session}"

    def is_operator(self, session: str) -> bool:
        return bool(self.operators) and self.owner(session) in self.operators

    # ---- the active model -----------------------------------------------------------------
    def set_active(self, session: str, key: str | None) -> None:
        with self._lock:
            self._entry(session or "")["active"] = key

    def active(self, session: str) -> str | None:
        with self._lock:
            return (self._state.get(session or "") or {}).get("active")

    def drop(self, session: str) -> None:
        with self._lock:
            self._state.pop(session or "", None)
