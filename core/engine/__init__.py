"""The run engine: the supervisor that owns every run task, a run's execution through the
graph bridge, per-run event logs and subscribers, the thread stream, the stream-mode
emitter and multitask strategy protocols with their registries, and the coordination with
other processes sharing a backend (``cluster``).
"""
