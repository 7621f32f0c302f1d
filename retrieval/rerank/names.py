"""Names of the shipped re-ranking checkpoints, in a module without torch so that command-line
code can show them as defaults before it loads any model."""

SHIPPED_DENSE = "dense"  # the dense network in retrieval/checkpoints/dense
DEFAULT_LOCATOR = "blur-aware"  # the shipped model whose box head finds the object to verify
