"""The store, damage tolerance, importers and the Python API."""
