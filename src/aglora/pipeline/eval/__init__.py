"""The eval stage: measure both sides (`sides`), assemble the metrics (`metrics`, with
`text_stats`), run it on a run or on any probe files (`evaluate`, `standalone`), and attack
the result (`robustness`: by fine-tuning, `relearn`, and with facts in the prompt,
`in_context`)."""
