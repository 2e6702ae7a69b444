"""jaxland: the topology of neural-network loss landscapes in JAX.

Sub-level sets, paths between parameter points, barriers and the depth of local minima, and the
constructive paths of Wang, Shen, Zhao & Zhang (IJCAI 2020), "Is the Skip Connection Provable to Reform
the Neural Network Loss Landscape?".

The package is a flat public API over families of modules, one subpackage each: `model` (networks,
losses, R(ξ), the objective, training), `data`, `paths`, `engine` (batched evaluation along paths),
`landscape` (barriers, slices, plots), `construct` (Lemma 9, Lemma 10, ξ*, the Theorem 11 path and its
certificate), `alignment` (permutation symmetries; weight and activation matching), `search` (curves,
NEB, DSS, depth, MST, toys), `second_order` (Lanczos, Hessian, critical points), `theory` (the
neighbouring theorems) and `experiments` (reproduce, scaling, alignment, CLI).
Every function that takes parameters reads them through one parameter layer (`jaxland._params`), so
any model works as it is: the paper's networks, an equinox model, a flax nnx state, a dict of arrays.
"""

from . import data as data, paths as paths
from ._version import VERSION as __version__  # noqa: F401 - the package version
from .alignment import (
    ALIGN_METHODS as ALIGN_METHODS,
    AlignResult as AlignResult,
    PermGroup as PermGroup,
    PermutationSpec as PermutationSpec,
    align as align,
    apply_perms as apply_perms,
    permutation_spec as permutation_spec,
)
from .construct import (
    PINV_RTOL_FACTOR as PINV_RTOL_FACTOR,
    AngleCluster as AngleCluster,
    BestLTerm as BestLTerm,
    Certificate as Certificate,
    ConnectResult as ConnectResult,
    Lemma10 as Lemma10,
    LinearPredictor as LinearPredictor,
    MergePlan as MergePlan,
    TheoremPath as TheoremPath,
    angle_cluster as angle_cluster,
    best_l_term as best_l_term,
    best_linear_predictor as best_linear_predictor,
    certify as certify,
    connect as connect,
    construct_path as construct_path,
    lemma9_eps as lemma9_eps,
    lemma9_size_bound as lemma9_size_bound,
    lemma10 as lemma10,
    linear_objective as linear_objective,
    merge_plan as merge_plan,
    pinv_apply as pinv_apply,
)
from .engine import default_memory_budget as default_memory_budget, evaluate_path as evaluate_path
from .experiments import (
    fit_slope as fit_slope,
    format_table as format_table,
    scaling as scaling,
    scaling_settings as scaling_settings,
)
from .landscape import (
    BarrierResult as BarrierResult,
    RefineResult as RefineResult,
    Slice as Slice,
    barrier as barrier,
    filter_normalized_directions as filter_normalized_directions,
    geodesic_ratio as geodesic_ratio,
    path_length as path_length,
    plane_slice as plane_slice,
    plot_paths as plot_paths,
    plot_slice as plot_slice,
    random_directions_slice as random_directions_slice,
    refine_max as refine_max,
    slice_coordinates as slice_coordinates,
)
from .model import (
    LOSSES as LOSSES,
    AbstractSkipLayers as AbstractSkipLayers,
    FitResult as FitResult,
    Linear as Linear,
    LossFn as LossFn,
    NoSkipNet as NoSkipNet,
    Objective as Objective,
    ResidualLinear as ResidualLinear,
    SkipNet as SkipNet,
    TwoLayer as TwoLayer,
    check_data as check_data,
    data_loss as data_loss,
    embed_two_layer as embed_two_layer,
    fit as fit,
    get_loss as get_loss,
    logistic as logistic,
    mse as mse,
    objective as objective,
    objective_fn as objective_fn,
    regularizer as regularizer,
    relu as relu,
    relu_net as relu_net,
    softmax_cross_entropy as softmax_cross_entropy,
)
from .search import (
    SEARCH_METHODS as SEARCH_METHODS,
    CurveResult as CurveResult,
    DepthResult as DepthResult,
    DSSResult as DSSResult,
    MSTResult as MSTResult,
    NEBResult as NEBResult,
    PermutationCounterexample as PermutationCounterexample,
    Theorem11Bound as Theorem11Bound,
    Toy as Toy,
    barrier_mst as barrier_mst,
    depth as depth,
    dss as dss,
    dss_bisect as dss_bisect,
    fit_curve as fit_curve,
    hidden_determinant as hidden_determinant,
    lower_points as lower_points,
    muller_brown as muller_brown,
    muller_brown_potential as muller_brown_potential,
    neb as neb,
    pairwise_heights as pairwise_heights,
    permutation_counterexample as permutation_counterexample,
    search_path as search_path,
)
from .second_order import (
    CriticalKind as CriticalKind,
    CriticalPoint as CriticalPoint,
    HessianEigs as HessianEigs,
    SpectralDensity as SpectralDensity,
    TraceEstimate as TraceEstimate,
    Tridiag as Tridiag,
    classify_critical_point as classify_critical_point,
    dense_hessian as dense_hessian,
    find_critical_point as find_critical_point,
    hessian_eigs as hessian_eigs,
    hessian_eigs_along_path as hessian_eigs_along_path,
    hessian_eigs_batch as hessian_eigs_batch,
    hessian_trace as hessian_trace,
    hessian_trace_batch as hessian_trace_batch,
    hvp as hvp,
    lanczos_tridiag as lanczos_tridiag,
    spectral_density as spectral_density,
)
from .theory import (
    CriticalTable as CriticalTable,
    ExtraNeuron as ExtraNeuron,
    ExtraNeuronDemo as ExtraNeuronDemo,
    ResidualChain as ResidualChain,
    ShamirBound as ShamirBound,
    ShamirCheck as ShamirCheck,
    ShamirExample1 as ShamirExample1,
    UnitFree as UnitFree,
    extra_neuron_demo as extra_neuron_demo,
    extra_neuron_objective as extra_neuron_objective,
    half_squared_error as half_squared_error,
    planted_saddle as planted_saddle,
    polynomial_hinge as polynomial_hinge,
    residual_critical_points as residual_critical_points,
    shamir_bound as shamir_bound,
    shamir_check as shamir_check,
    shamir_example1 as shamir_example1,
    unit_free_objective as unit_free_objective,
)
