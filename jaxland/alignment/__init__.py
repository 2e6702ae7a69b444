"""Permutation alignment (Git Re-Basin, Ainsworth et al. 2023): the permutation symmetries of a
network's hidden units (`PermutationSpec`, built automatically for SkipNet, NoSkipNet, TwoLayer and
eqx.nn.MLP, or declared for any model) and `align`, which reorders one network's hidden units to
match another's by weight matching or activation matching without changing the function it
computes."""

from ._align import (
    ALIGN_METHODS as ALIGN_METHODS,
    AlignResult as AlignResult,
    align as align,
    apply_perms as apply_perms,
)
from ._repair import interpolate as interpolate, repair as repair
from ._spec import (
    PermGroup as PermGroup,
    PermutationSpec as PermutationSpec,
    permutation_spec as permutation_spec,
)
