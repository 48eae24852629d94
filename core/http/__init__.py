"""The HTTP layer: the app factory and server entry point (``app``), Hypercorn's worker
with our accept loop (``server``), the command line (``cli``), the custom ``http.app``
mounted in front (``custom_app``), the OpenAPI document (``openapi``), request/response
helpers (``wire``) and one blueprint per API resource (``routes``). It parses, calls a
resource service, encodes; it holds no run logic.

Layers, top calls down, never up: ``http`` -> ``resources`` -> ``engine`` -> ``infra``
(checked by the import-linter contract in ``pyproject.toml``).
"""
