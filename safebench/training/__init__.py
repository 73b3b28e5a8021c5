"""The training layer: one run's loop, evaluation, live logging, video recording, progress,
throughput measurement.
"""
