"""`jaxland.paths`: parametrised paths t ↦ parameter pytree (see `jaxland._paths`).

Constructors: `linear`, `polychain`, `bezier`, `concat`, `reverse`, `from_function`; classes
`AbstractPath` (subclass it for your own path), `Linear`, `Polychain`, `Bezier`, `Concat`, `Reverse`,
`FunctionPath`; helpers `check_same_structure`, `stack_trees`, `tree_index`, `tree_norm`.
"""

from ._paths import *  # noqa: F403  (the public names of the namespace are `_paths.__all__`)
from ._paths import __all__  # noqa: F401
