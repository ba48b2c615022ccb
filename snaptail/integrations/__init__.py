"""Adapters that make snaptail the persistence layer of agent frameworks.

Each module imports its framework only when used; ``import snaptail`` loads none.
"""
