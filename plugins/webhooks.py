"""Webhooks: POST a finished run to its ``webhook`` URL. (Placeholder; being written.)"""

from __future__ import annotations


class WebhookPlugin:
    """One per app."""
