"""Adapters between snaptail and other agent frameworks (one module per framework)."""
