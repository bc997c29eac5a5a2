"""`aglora bench`: every registered method on the same concept, probes and step budget, over
seeds. `config` (settings and method entries), `cells` (one method x seed, the shared base side),
`table` (aggregation, bench.md, figure), `memory` (peak memory), `workers` (cells in parallel
processes) and `run` (the command's driver)."""
