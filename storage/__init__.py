"""Storage backends, each a plugin."""
