"""The neighbouring theorems as runnable checks: Shamir (NeurIPS 2018), Yun, Sra & Jadbabaie (NeurIPS
2019) on deep residual chains, and the extra neuron of Liang, Sun, Lee & Srikant (NeurIPS 2018) with its
unit-free form (Sohl-Dickstein & Kawaguchi 2019); the paper cites the first two in its §2 and §4."""

from ._extra_neuron import (
    ExtraNeuron as ExtraNeuron,
    ExtraNeuronDemo as ExtraNeuronDemo,
    UnitFree as UnitFree,
    extra_neuron_demo as extra_neuron_demo,
    extra_neuron_objective as extra_neuron_objective,
    polynomial_hinge as polynomial_hinge,
    unit_free_objective as unit_free_objective,
)
from ._residual_chain import (
    CriticalTable as CriticalTable,
    ResidualChain as ResidualChain,
    planted_saddle as planted_saddle,
    residual_critical_points as residual_critical_points,
)
from ._shamir import (
    ShamirBound as ShamirBound,
    ShamirCheck as ShamirCheck,
    ShamirExample1 as ShamirExample1,
    half_squared_error as half_squared_error,
    shamir_bound as shamir_bound,
    shamir_check as shamir_check,
    shamir_example1 as shamir_example1,
)
