"""Webhook URLs: the SSRF policy of ``langgraph.json``'s ``webhooks.url``. (Placeholder;
the full policy is being written.)"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from triograph.core.errors import InvalidRequest

if TYPE_CHECKING:
    from triograph.core.settings import Settings


class WebhookPolicy:
    """Which webhook URLs runs may name, and which addresses deliveries may reach."""

    def __init__(self, settings: Settings) -> None:
        self.config = settings.webhooks.get("url") or {}

    def check(self, url: str) -> None:
        """At run creation: a 422 naming the problem if ``url`` may not be used."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidRequest(f"Invalid webhook hostname '{parsed.hostname or ''}'")
