"""The application layer: the stores agents are saved to and loaded from."""
