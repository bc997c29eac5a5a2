"""Infrastructure with no model knowledge: atomic artifacts, the keyed cache, threads for two
passes at once, number formatting and a host-speed index."""
