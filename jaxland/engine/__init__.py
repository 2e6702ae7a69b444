"""The path engine: F(γ(t)) at many points t at once — one compiled loop over the points for any
function and any model (groups of points under vmap, sized by a cost model from the traced
computation), data in exact batches, sharded over devices — with structured kernels for the paper's
networks (the first layer precomputed per piece, small products first, and on CPU the ReLU breakpoint
sweep), chosen by a cost model."""

from ._chunks import default_memory_budget as default_memory_budget
from ._evaluate import evaluate_path as evaluate_path
