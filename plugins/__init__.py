"""Built-in plugins: stream modes and multitask strategies."""
