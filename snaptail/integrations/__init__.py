"""Adapters that put snaptail under agent frameworks (each needs its extra installed)."""
