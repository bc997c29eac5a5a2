"""The stages of a run, in data-flow order: `record -> score -> mask -> train -> eval -> report`.

`run` is the spine (the run directory, resume, one function per stage); each stage lives in a
module or package named after it. Stages use the parts in `aglora.model` and never the methods,
the bench or the feature packages built on top of them.
"""
