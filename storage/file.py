"""The file backend (SQLite). (Placeholder; being written.)"""
