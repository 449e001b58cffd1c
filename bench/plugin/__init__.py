"""The pytest plugin (a ``pytest11`` entry point): options, collection of the matrix, pytest-benchmark's face."""
