"""The results layer: the store, the only owner of run directories, and importers."""
