"""Crons routes. (Placeholder; being written.)"""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("crons", __name__)
