"""Tasks: what the entry points run (train, evaluate, predict, export, and the sweep job wrapper)."""
