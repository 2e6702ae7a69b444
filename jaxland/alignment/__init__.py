"""Permutation alignment (Git Re-Basin, Ainsworth et al. 2023): the permutation symmetries of a
network's hidden units (`PermutationSpec`, built in for SkipNet, NoSkipNet, TwoLayer and
eqx.nn.MLP, found by tracing any model on an example input — residual streams shared across blocks
—, or declared) and `align`, which reorders one network's hidden units to match another's by weight
matching or activation matching without changing the function it computes (checked on a probe
batch); `repair` and `interpolate` (REPAIR, Jordan et al. 2023: the interpolated network's channel
statistics reset to the interpolation of the endpoints')."""

from ._align import (
    ALIGN_METHODS as ALIGN_METHODS,
    AlignResult as AlignResult,
    align as align,
    apply_perms as apply_perms,
    function_rtol as function_rtol,
)
from ._repair import interpolate as interpolate, repair as repair
from ._spec import (
    PermGroup as PermGroup,
    PermutationSpec as PermutationSpec,
    permutation_spec as permutation_spec,
)
