"""The application service: ``AgentStore`` (save, load from snapshot + tail), its memory
budget, ``AgentCache``, telemetry and metrics, maintenance and inspection (plain values)."""
