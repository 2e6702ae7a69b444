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
from ._evaluate import Objective, evaluate_path, objective_fn
from ._metrics import BarrierResult, RefineResult, barrier, geodesic_ratio, path_length, refine_max

# --- constructive paths ---

# --- search and depth ---

# --- second order and neighbouring theorems ---

__version__ = "0.1.0"
