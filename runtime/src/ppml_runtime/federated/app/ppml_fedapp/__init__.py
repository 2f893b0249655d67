"""Shims naming ppml_runtime's Flower components for the FAB."""
