"""The controlled track: TOFU's protocol on a seeded fictitious film catalogue, runnable on CPU.

`catalogue` invents the films and their questions, `implant` fine-tunes them into the model (the
"full" model) and into a "retain" model that never sees the forget films, `methods` unlearns the
forget films with each method, `forget_quality` holds the KS test and TOFU's metrics, and `track`
runs it all and writes `controlled.json` / `controlled.md`.
"""
