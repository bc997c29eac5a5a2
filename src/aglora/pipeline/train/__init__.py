"""The train stage: one loop (`loop`), the objectives it optimises (`objectives`), the targets
of the forget items (`targets`), the base model's side computed once (`reference`), and early
stopping (`stopping`)."""
