"""Paths in parameter space: pure functions t ∈ [0, 1] ↦ parameter pytree.

Constructors `linear`, `polychain`, `bezier`, `concat`, `reverse`, `from_function`; the classes
`AbstractPath` (subclass it for your own path), `Segment`, `Polychain`, `Bezier`, `Concat`, `Reverse`,
`FunctionPath`; and the pytree helpers `check_same_structure`, `stack_trees`, `tree_index`, `tree_norm`
(from jaxland's parameter layer). A path between any two models of equal structure moves their
floating-point leaves and carries every other leaf through (the non-floating leaves of the points
joined must be equal). Eager calls `path(t)` run through one cached compiled function per path layout
(`jaxland._eager.eager_call`); t must lie in [0, 1], checked under jit too.
"""

from .._params import (
    check_same_structure as check_same_structure,
    stack_trees as stack_trees,
    tree_index as tree_index,
    tree_norm as tree_norm,
)
from ._paths import (
    AbstractPath as AbstractPath,
    Bezier as Bezier,
    Concat as Concat,
    FunctionPath as FunctionPath,
    Polychain as Polychain,
    Reverse as Reverse,
    Segment as Segment,
    bezier as bezier,
    concat as concat,
    from_function as from_function,
    linear as linear,
    polychain as polychain,
    reverse as reverse,
)
