"""The repository as a whole: docs, notebook, installer, Docker, setup."""
