"""The experiment layer: launching, reproducing, the algorithm contract."""
