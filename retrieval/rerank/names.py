"""Names of the shipped re-ranking checkpoints and the dense network's shape settings, in a
module without torch so that command-line code can show them as defaults before it loads any
model."""

SHIPPED_DENSE = "dense"  # the dense network in retrieval/checkpoints/dense
DEFAULT_LOCATOR = "blur-aware"  # the shipped model whose box head finds the object to verify

DENSE_CROP = 64  # side in pixels of the crop the dense network describes
STRIDES = (4, 8)  # image pixels of the crop per descriptor cell, the network's choices
DEFAULT_STRIDE = 4
DEFAULT_DIM = 32  # descriptor size per cell
