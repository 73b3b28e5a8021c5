"""The experiment layer: launching a grid, reproducing paper tables, the published numbers, the
algorithm contract.
"""
