"""reports: detbench result files -> self-contained HTML, Markdown and CSV comparisons."""
