"""Results: aggregation of per-run metrics (aggregate), the results table (table), figures (figures), and one
consistent look per agent (style)."""
