"""Everything around the article's networks: runtime, data, the provider's API, the attacks' stages, metrics.

`bf_mnist.py` beside this package holds the article's networks and the inversion's training
functions; these modules hold the rest, one part each. Nothing happens at import.
"""
