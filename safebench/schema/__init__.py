"""The experiment file: its typed schema, line-numbered YAML, the generated docs."""
