"""The env factory, the built-in CMDPs (safebench.cmdps) and the fast navigation layer."""
