"""The path engine: F(γ(t)) at many points t at once — vmap inside jit, chunked to a memory budget,
data in exact batches, sharded over devices — with structured kernels for the paper's networks (the
first layer precomputed per piece, small products first, and on CPU the ReLU breakpoint sweep)."""

from ._chunks import default_memory_budget as default_memory_budget
from ._evaluate import evaluate_path as evaluate_path
