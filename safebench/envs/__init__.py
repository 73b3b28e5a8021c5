"""Environments: the factory (Safety-Gymnasium, the built-in CMDPs of safebench.cmdps, custom envs)
and the fast navigation layer.
"""
