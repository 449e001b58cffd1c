"""detbench's one importable name. ``detbench.bench`` (the matrix, its runtime and tools), ``detbench.envcheck`` (the
preflight) and ``detbench.reports`` (reports and the result history) are the checkout's top-level ``bench/``,
``envcheck/`` and ``reports/`` folders (links here; a wheel holds copies), so installing detbench takes no generic
top-level name (``bench``, ``reports``) from the project it is installed beside."""
