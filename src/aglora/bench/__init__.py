"""`aglora bench`: every registered method on the same concept, probes and step budget, over
seeds. `config` (settings and method entries), `cells` (one method x seed, the shared base side),
`table` (aggregation, bench.md, figure), `memory` (peak memory), `pool` (running the cells, one
at a time or N at once in a process pool) and `run` (the command's driver)."""
