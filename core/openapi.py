"""The OpenAPI document of the routes this server actually has. (Placeholder; being written.)"""

from __future__ import annotations
