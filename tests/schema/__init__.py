"""The experiment schema, run ids and the generated YAML reference."""
