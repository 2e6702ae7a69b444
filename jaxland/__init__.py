"""jaxland: the topology of neural-network loss landscapes in JAX.

Sub-level sets, paths between parameter points, barriers and the depth of local minima, and the
constructive paths of Wang, Shen, Zhao & Zhang (IJCAI 2020), "Is the Skip Connection Provable to Reform
the Neural Network Loss Landscape?".
"""

# --- models and objective (foundation) ---
from . import data, paths
from ._best_l_term import BestLTerm, best_l_term
from ._losses import LOSSES, get_loss, logistic, mse, softmax_cross_entropy
from ._models import (
    AbstractSkipLayers,
    Linear,
    NoSkipNet,
    ResidualLinear,
    SkipNet,
    TwoLayer,
    embed_two_layer,
    relu,
    relu_net,
)
from ._objective import check_data, data_loss, objective
from ._regularizer import regularizer
from ._train import FitResult, fit

# --- path engine ---
from ._plot import plot_paths, plot_slice
from ._slices import (
    Slice,
    filter_normalized_directions,
    plane_slice,
    random_directions_slice,
    slice_coordinates,
)
from ._evaluate import Objective, evaluate_path, objective_fn
from ._metrics import BarrierResult, RefineResult, barrier, geodesic_ratio, path_length, refine_max

# --- constructive paths ---
from ._cluster import AngleCluster, MergePlan, angle_cluster, lemma9_eps, lemma9_size_bound, merge_plan
from ._construct import Certificate, ConnectResult, TheoremPath, certify, connect, construct_path
from ._lemma10 import Lemma10, lemma10

# --- search and depth ---
from ._depth import (
    DepthResult,
    MSTResult,
    Theorem11Bound,
    barrier_mst,
    depth,
    lower_points,
    pairwise_heights,
)
from ._scaling import fit_slope, format_table, scaling, scaling_settings
from ._search import (
    SEARCH_METHODS,
    CurveResult,
    DSSResult,
    NEBResult,
    dss,
    dss_bisect,
    fit_curve,
    geodesic_length,
    neb,
    search_path,
)
from ._toys import (
    PermutationCounterexample,
    Toy,
    hidden_determinant,
    muller_brown,
    muller_brown_potential,
    permutation_counterexample,
)

# --- second order and neighbouring theorems ---
from ._hessian import (
    HessianEigs,
    SpectralDensity,
    TraceEstimate,
    dense_hessian,
    hessian_eigs,
    hessian_eigs_along_path,
    hessian_eigs_batch,
    hessian_trace,
    hessian_trace_batch,
    hvp,
    lanczos_tridiag,
    spectral_density,
)
from ._critical import KINDS, CriticalPoint, classify_critical_point, find_critical_point
from ._linear_predictor import LinearPredictor, best_linear_predictor, linear_objective
from ._theorems import (
    CriticalTable,
    ResidualChain,
    ShamirBound,
    ShamirCheck,
    ShamirExample1,
    half_squared_error,
    planted_saddle,
    residual_critical_points,
    shamir_bound,
    shamir_check,
    shamir_example1,
)
from ._extra_neuron import (
    ExtraNeuron,
    ExtraNeuronDemo,
    UnitFree,
    extra_neuron_demo,
    extra_neuron_objective,
    polynomial_hinge,
    unit_free_objective,
)

__version__ = "0.1.0"
