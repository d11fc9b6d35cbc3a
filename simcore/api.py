"""``simulate(cfg) -> RunResult``: the one entry point of a simulation (filled in by engine.py)."""
