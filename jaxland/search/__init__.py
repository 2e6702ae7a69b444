"""Searching low paths and measuring depth: curve fitting (Garipov et al.), the nudged elastic band
(AutoNEB, Draxler et al.), Dynamic String Sampling (Freeman & Bruna), the depth of a minimum (Theorem
4), the minimum spanning tree of pairwise barriers, and toy landscapes with known saddles."""

from ._curve import CurveResult as CurveResult, fit_curve as fit_curve
from ._depth import (
    DepthResult as DepthResult,
    Theorem11Bound as Theorem11Bound,
    depth as depth,
    lower_points as lower_points,
)
from ._dss import DSSResult as DSSResult, dss as dss, dss_bisect as dss_bisect
from ._mst import (
    MSTResult as MSTResult,
    barrier_mst as barrier_mst,
    pairwise_heights as pairwise_heights,
)
from ._neb import NEBResult as NEBResult, neb as neb
from ._search_path import SEARCH_METHODS as SEARCH_METHODS, search_path as search_path
from ._toys import (
    PermutationCounterexample as PermutationCounterexample,
    Toy as Toy,
    hidden_determinant as hidden_determinant,
    muller_brown as muller_brown,
    muller_brown_potential as muller_brown_potential,
    permutation_counterexample as permutation_counterexample,
)
