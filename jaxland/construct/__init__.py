"""The paper's constructions: Lemma 9 (clustering rows by angle, the merge plan), Lemma 10 (the loss
moved by merging two units), ξ* (the e(l) network of eq. 5; the best linear predictor of Theorem 6),
the steps of the Theorem 11 path (1a–3b and the join), the path itself and its certificate."""

from ._best_l_term import BestLTerm as BestLTerm, best_l_term as best_l_term
from ._certificate import Certificate as Certificate, certify as certify
from ._cluster import (
    AngleCluster as AngleCluster,
    MergePlan as MergePlan,
    angle_cluster as angle_cluster,
    lemma9_eps as lemma9_eps,
    lemma9_size_bound as lemma9_size_bound,
    merge_plan as merge_plan,
)
from ._connect import ConnectResult as ConnectResult, connect as connect
from ._lemma10 import Lemma10 as Lemma10, lemma10 as lemma10
from ._linear_predictor import (
    LinearPredictor as LinearPredictor,
    best_linear_predictor as best_linear_predictor,
    linear_objective as linear_objective,
)
from ._steps import PINV_RTOL_FACTOR as PINV_RTOL_FACTOR, pinv_apply as pinv_apply
from ._theorem_path import TheoremPath as TheoremPath, construct_path as construct_path
