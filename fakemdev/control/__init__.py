"""The control channel of a running mount (:mod:`.server`) and the table of
the ops every mount answers (:mod:`.ops`, imported by the daemon only: it
pulls in faults, scenario playback and migration)."""
from __future__ import annotations

from .server import ControlError, Controller, ControlServer, Handler, call

__all__ = ["ControlError", "Controller", "ControlServer", "Handler", "call"]
