"""Numeric core: numpy and scipy only. Never imports sources, frameworks or the report layer."""
