"""Tools for writing a concept: which facts the base model knows (`check`), and a commented
skeleton of a concept spec and probe file (`skeleton`)."""
