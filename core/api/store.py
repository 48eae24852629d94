"""Store routes. (Placeholder; being written.)"""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("store", __name__)
