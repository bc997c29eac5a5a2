"""Recommender unlearning: ban catalogue items so an LLM recommender never lists them again.

Modules, one job each:

* `catalog`  - the movie catalogue (shipped CSV or a user's own), loading with clear errors;
* `matcher`  - finds catalogue titles in generated text, and splits a generation into list items;
* `prompts`  - user-profile prompts (train / held-apart eval) and fact prompts about films;
* `ranking`  - likelihood ranking of the whole catalogue for a prompt, and NDCG@k;
* `metrics`  - exposure, banned rank, list quality (validity, genre agreement), base -> after;
* `spec`     - a ban's concept spec and probe file, built from the items and the base model;
* `ban`      - `aglora ban`: spec -> pipeline -> recommendation metrics (+ two-adapter check);
* `show`     - `aglora recommend`: base list and after list side by side, and the base survey.
"""
