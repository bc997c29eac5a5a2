"""`aglora suite`: one default configuration on several concepts, one table.

`run` runs `aglora forget` (the recommended settings, no per-concept setting) on each concept
into its own run directory, resuming finished ones; `table` turns the runs' metrics into
`suite.md`, `suite.json` and a figure.
"""
