"""`jaxland.paths`: parametrised paths t ↦ parameter pytree (see `jaxland._paths`).

Constructors: `linear`, `polychain`, `bezier`, `concat`, `reverse`, `from_function`; classes
`AbstractPath` (subclass it for your own path), `Linear`, `Polychain`, `Bezier`, `Concat`, `Reverse`,
`FunctionPath`; helpers `check_same_structure`, `stack_trees`, `tree_index`, `tree_norm`.
"""

from ._paths import (
    AbstractPath,
    Bezier,
    Concat,
    FunctionPath,
    Linear,
    Polychain,
    Reverse,
    bezier,
    check_same_structure,
    concat,
    from_function,
    linear,
    polychain,
    reverse,
    stack_trees,
    tree_index,
    tree_norm,
)

__all__ = [
    "AbstractPath",
    "Linear",
    "Polychain",
    "Bezier",
    "Concat",
    "Reverse",
    "FunctionPath",
    "linear",
    "polychain",
    "bezier",
    "concat",
    "reverse",
    "from_function",
    "check_same_structure",
    "stack_trees",
    "tree_index",
    "tree_norm",
]
