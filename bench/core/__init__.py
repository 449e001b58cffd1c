"""The domain, without torch: cells and their axes, options, the matrix, the result schema and run record,
ratios, repeats, statistics for the gate, the journal. Everything above imports this; it imports nothing above."""
