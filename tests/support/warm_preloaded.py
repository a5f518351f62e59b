"""Imported by the warm-start tests' server before it serves (see warm_engine.PRELOADED)."""
