"""The sweep stage: grid and ids, group training on Ray, results table and schema, plots, report."""
