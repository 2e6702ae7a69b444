"""One table of bad inputs for the public API (issue 12): every function of the top-level `jaxland`
namespace, `jaxland.paths` and `jaxland.data` gets the wrong rank, the wrong size, NaN or inf,
empty input, the wrong type or a value out of range, and must raise an exception whose message
names the argument.

Each case is cheap: tiny shapes, and every check fires before any real computation. Arguments are
passed by keyword where the signature allows, so that renames of positional arguments do not break
the table (the objective of the second-order functions is matched as `F` or `fn`).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
import jaxland.data as jd
import jaxland.paths as jp

BAD = (TypeError, ValueError)


@functools.cache
def S() -> SimpleNamespace:
    """The shared tiny objects, built once on first use from NumPy arrays (no eager JAX op, so no
    compilation before the cases run)."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    def skipnet():
        return jl.SkipNet(
            W1=arr(4, 2), W2=arr(1, 4), V1=arr(4, 2), V2=arr(2, 4), theta=(arr(2, 2), arr(2, 2))
        )

    net, net_b = skipnet(), skipnet()
    x = arr(6, 2)
    y = jnp.asarray(np.sin(np.asarray(x)[:, :1]))
    nan_x = np.asarray(x).copy()
    nan_x[0, 0] = np.nan
    return SimpleNamespace(
        key=jax.random.PRNGKey(0),
        net=net,
        net_b=net_b,
        two=jl.TwoLayer(W1=arr(3, 2), W2=arr(1, 3)),
        x=x,
        y=y,
        F=jl.objective_fn(x, y, kappa=1e-3),
        nan_x=jnp.asarray(nan_x),
        rl=jl.ResidualLinear(W=arr(1, 2), V=arr(2, 2), theta=(arr(2, 2), arr(2, 2))),
        seg=jp.linear(net, net_b),
        rows=arr(5, 2),
        stacked=jax.tree.map(lambda *a: jnp.asarray(np.stack(a)), net, net_b),
    )


def _batchnorm():
    """A tiny equinox model with BatchNorm state (input size 2, as the table's x)."""
    import equinox as eqx

    return eqx.nn.make_with_state(eqx.nn.BatchNorm)(2, "batch")


def _resnet():
    """The smallest `DigitsResNet` (depth 4, width 2) and its BatchNorm state."""
    import equinox as eqx

    return eqx.nn.make_with_state(jl.DigitsResNet)(4, 2, key=jax.random.PRNGKey(0))


def case(id_, call, name, *, exc=BAD, marks=()):
    """`call(s)` must raise `exc` with a message naming `name` (a regex, matched as a word)."""
    return pytest.param(call, exc, name, id=id_, marks=marks)


CASES = [
    # ---- model: objective and its data checks -----------------------------------------------
    case("objective-x-rank1", lambda s: jl.objective(s.net, s.x[:, 0], s.y, kappa=0.1), "x"),
    case(
        "objective-x-wrong-n", lambda s: jl.objective(s.net, jnp.ones((6, 3)), s.y, kappa=0.1), "x"
    ),
    case("objective-y-rank1", lambda s: jl.objective(s.net, s.x, s.y[:, 0], kappa=0.1), "y"),
    case("objective-y-rows", lambda s: jl.objective(s.net, s.x, s.y[:4], kappa=0.1), "y"),
    case("objective-x-nan", lambda s: jl.objective(s.net, s.nan_x, s.y, kappa=0.1), "x"),
    case(
        "objective-y-inf",
        lambda s: jl.objective(s.net, s.x, np.full((6, 1), np.inf), kappa=0.1),
        "y",
    ),
    case("objective-empty", lambda s: jl.objective(s.net, s.x[:0], s.y[:0], kappa=0.1), "x"),
    case("objective-x-list", lambda s: jl.objective(s.net, s.x.tolist(), s.y, kappa=0.1), "x"),
    case("objective-kappa-str", lambda s: jl.objective(s.net, s.x, s.y, kappa="1e-3"), "kappa"),
    case("objective-kappa-none", lambda s: jl.objective(s.net, s.x, s.y, kappa=None), "kappa"),
    case("objective-kappa-neg", lambda s: jl.objective(s.net, s.x, s.y, kappa=-1.0), "kappa"),
    case("objective-kappa-nan", lambda s: jl.objective(s.net, s.x, s.y, kappa=math.nan), "kappa"),
    case(
        "objective-kappa-vector",
        lambda s: jl.objective(s.net, s.x, s.y, kappa=jnp.ones(2)),
        "kappa",
    ),
    case(
        "objective-kappa-jit",
        lambda s: jax.block_until_ready(
            jax.jit(lambda k: jl.objective(s.net, s.x, s.y, kappa=k))(-1.0)
        ),
        "kappa",
        exc=Exception,
    ),
    case(
        "objective-loss", lambda s: jl.objective(s.net, s.x, s.y, kappa=0.1, loss="hinge"), "loss"
    ),
    case(
        "objective-logistic-labels",
        lambda s: jl.objective(s.net, s.x, s.y, kappa=0.1, loss="logistic"),
        "y",
    ),
    case("objective_fn-y-rank1", lambda s: jl.objective_fn(s.x, s.y[:, 0], kappa=1e-3), "y"),
    case("objective_fn-x-rank3", lambda s: jl.objective_fn(s.x[None], s.y, kappa=1e-3), "x"),
    case("objective_fn-empty", lambda s: jl.objective_fn(s.x[:0], s.y[:0], kappa=1e-3), "x"),
    case("objective_fn-x-nan", lambda s: jl.objective_fn(s.nan_x, s.y, kappa=1e-3), "x"),
    case("objective_fn-kappa-str", lambda s: jl.objective_fn(s.x, s.y, kappa="0.1"), "kappa"),
    case(
        "objective_fn-kappa-jit",
        lambda s: jax.block_until_ready(
            jax.jit(lambda k: jl.objective_fn(s.x, s.y, kappa=k)(s.net))(jnp.nan)
        ),
        "kappa",
        exc=Exception,
    ),
    case(
        "objective_fn-vs-net",
        lambda s: jl.objective_fn(jnp.ones((6, 3)), s.y, kappa=0.0)(s.net),
        "x",
    ),
    case("Objective-y-rank1", lambda s: jl.Objective(s.x, s.y[:, 0], 1e-3), "y"),
    case("check_data-x-rank1", lambda s: jl.check_data(s.net, s.x[0], s.y), "x"),
    case("check_data-y-2cols", lambda s: jl.check_data(s.net, s.x, jnp.ones((6, 2))), "y"),
    case("data_loss-y-rank1", lambda s: jl.data_loss(s.net, s.x, s.y[:, 0]), "y"),
    case("data_loss-empty", lambda s: jl.data_loss(s.net, s.x[:0], s.y[:0]), "x"),
    case("fit-steps", lambda s: jl.fit(s.net, s.x, s.y, kappa=0.0, steps=0), "steps"),
    case("fit-steps-float", lambda s: jl.fit(s.net, s.x, s.y, kappa=0.0, steps=2.5), "steps"),
    case(
        "fit-batch_size",
        lambda s: jl.fit(s.net, s.x, s.y, kappa=0.0, batch_size=0, key=s.key),
        "batch_size",
    ),
    case("fit-key", lambda s: jl.fit(s.net, s.x, s.y, kappa=0.0, batch_size=2, key=3), "key"),
    case("fit-kappa", lambda s: jl.fit(s.net, s.x, s.y, kappa="a", steps=1), "kappa"),
    case("fit-x-nan", lambda s: jl.fit(s.net, s.nan_x, s.y, kappa=0.0, steps=1), "x"),
    case("regularizer-type", lambda s: jl.regularizer("net"), "net"),
    case("get_loss", lambda s: jl.get_loss("hinge"), "loss"),
    case("mse-shapes", lambda s: jl.mse(jnp.ones((6, 1)), jnp.ones(6)), "y"),
    case("logistic-shapes", lambda s: jl.logistic(jnp.ones((6, 2)), jnp.ones((6, 1))), "y"),
    case(
        "softmax_cross_entropy-shapes",
        lambda s: jl.softmax_cross_entropy(jnp.ones((6, 3)), jnp.ones((5,))),
        "y",
    ),
    case("relu_net-z-rank1", lambda s: jl.relu_net(s.net.theta, jnp.ones(2)), "z"),
    case("relu_net-theta", lambda s: jl.relu_net("theta", jnp.ones((3, 2))), "theta"),
    case(
        "embed_two_layer-n",
        lambda s: jl.embed_two_layer(jl.TwoLayer(W1=jnp.ones((2, 3)), W2=jnp.ones((1, 2))), s.net),
        "two",
    ),
    case(
        "embed_two_layer-slots",
        lambda s: jl.embed_two_layer(s.two, s.net, slots=jnp.arange(2)),
        "slots",
    ),
    # ---- model: the networks --------------------------------------------------------------------
    case("SkipNet.init-m0", lambda s: jl.SkipNet.init(s.key, n=2, m=0), "m"),
    case("SkipNet.init-n-neg", lambda s: jl.SkipNet.init(s.key, n=-1, m=4), "n"),
    case("SkipNet.init-m-float", lambda s: jl.SkipNet.init(s.key, n=2, m=2.5), "m"),
    case(
        "SkipNet.init-hidden0",
        lambda s: jl.SkipNet.init(s.key, n=2, m=4, hidden=(0,)),
        r"hidden\[0\]",
    ),
    case(
        "SkipNet.init-scale-nan",
        lambda s: jl.SkipNet.init(s.key, n=2, m=4, residual_scale=math.nan),
        "residual_scale",
    ),
    case("SkipNet.init-key", lambda s: jl.SkipNet.init(None, n=2, m=4), "key"),
    case(
        "SkipNet-list-field",
        lambda s: jl.SkipNet(
            W1=s.net.W1.tolist(), W2=s.net.W2, V1=s.net.V1, V2=s.net.V2, theta=s.net.theta
        ),
        "W1",
    ),
    case("NoSkipNet.init-d_y0", lambda s: jl.NoSkipNet.init(s.key, n=2, m=4, d_y=0), "d_y"),
    case("TwoLayer.init-m0", lambda s: jl.TwoLayer.init(s.key, n=2, m=0), "m"),
    case("TwoLayer-int-field", lambda s: jl.TwoLayer(W1=jnp.ones((3, 2), int), W2=s.two.W2), "W1"),
    case("ResidualLinear.init-d_z0", lambda s: jl.ResidualLinear.init(s.key, d_x=2, d_z=0), "d_z"),
    case("Linear.init-dtype", lambda s: jl.Linear.init(s.key, d_x=2, dtype=jnp.int32), "dtype"),
    case("Linear-rank1", lambda s: jl.Linear(W=jnp.ones(3)), "W"),
    case("SkipNet-call-x", lambda s: s.net(jnp.ones((4, 3))), "x"),
    # ---- data -----------------------------------------------------------------------------------
    case(
        "sphere_points-n_samples0", lambda s: jd.sphere_points(s.key, n_samples=0, n=2), "n_samples"
    ),
    case("sphere_points-n-neg", lambda s: jd.sphere_points(s.key, n_samples=4, n=-1), "n"),
    case("sphere_points-key", lambda s: jd.sphere_points(None, n_samples=4, n=2), "key"),
    case(
        "sphere_teacher-noise-nan",
        lambda s: jd.sphere_teacher(s.key, n_samples=4, n=2, noise=math.nan),
        "noise",
    ),
    case(
        "sphere_teacher-noise-str",
        lambda s: jd.sphere_teacher(s.key, n_samples=4, n=2, noise="0.1"),
        "noise",
    ),
    case("sphere_teacher-d_y0", lambda s: jd.sphere_teacher(s.key, n_samples=4, n=2, d_y=0), "d_y"),
    case(
        "sphere_teacher-dtype",
        lambda s: jd.sphere_teacher(s.key, n_samples=4, n=2, dtype=jnp.int32),
        "dtype",
    ),
    case(
        "sphere_classification-n", lambda s: jd.sphere_classification(s.key, n_samples=4, n=0), "n"
    ),
    case("digits-classes-range", lambda s: jd.digits(classes=(0, 11)), "classes"),
    case("digits-classes-one", lambda s: jd.digits(classes=(3,)), "classes"),
    case("diabetes-dtype", lambda s: jd.diabetes(dtype=jnp.int32), "dtype"),
    case("default_problem-dtype", lambda s: jd.default_problem(dtype="int8"), "dtype"),
    case("load-name", lambda s: jd.load("nope"), "name"),
    # ---- paths ----------------------------------------------------------------------------------
    case("linear-structure", lambda s: jp.linear(s.net, s.two), "a|b"),
    case("linear-type", lambda s: jp.linear(s.net, "b"), "b"),
    case("polychain-one-node", lambda s: jp.polychain([s.net]), "nodes"),
    case(
        "polychain-parametrization",
        lambda s: jp.polychain([s.net, s.net_b], parametrization="x"),
        "parametrization",
    ),
    case("bezier-one-point", lambda s: jp.bezier([s.net]), "control_points"),
    case("concat-empty", lambda s: jp.concat(), "paths"),
    case("concat-type", lambda s: jp.concat(s.seg, "x"), "paths"),
    case("reverse-type", lambda s: jp.reverse("x"), "path"),
    case("from_function-type", lambda s: jp.from_function("f"), "fn"),
    case("stack_trees-empty", lambda s: jp.stack_trees([]), "trees|nodes"),
    case("segment-t-out-of-range", lambda s: s.seg(2.0), "t"),
    case("segment-t-nan", lambda s: s.seg(math.nan), "t"),
    case(
        "segment-t-jit",
        lambda s: jax.block_until_ready(jax.jit(lambda t: s.seg(t))(1.5)),
        "t",
        exc=Exception,
    ),
    # ---- engine ---------------------------------------------------------------------------------
    case("evaluate_path-ts-empty", lambda s: jl.evaluate_path(s.F, s.seg, []), "ts"),
    case("evaluate_path-ts-range", lambda s: jl.evaluate_path(s.F, s.seg, [0.5, 2.0]), "ts"),
    case("evaluate_path-ts-rank2", lambda s: jl.evaluate_path(s.F, s.seg, [[0.5]]), "ts"),
    case("evaluate_path-ts-nan", lambda s: jl.evaluate_path(s.F, s.seg, [0.5, math.nan]), "ts"),
    case("evaluate_path-fn", lambda s: jl.evaluate_path("F", s.seg, [0.5]), "fn"),
    case("evaluate_path-path", lambda s: jl.evaluate_path(s.F, s.net, [0.5]), "path"),
    case(
        "evaluate_path-batch_size",
        lambda s: jl.evaluate_path(s.F, s.seg, [0.5], batch_size=0),
        "batch_size",
    ),
    case(
        "evaluate_path-batch_size-without-data",
        lambda s: jl.evaluate_path(lambda p: jl.data_loss(p, s.x, s.y), s.seg, [0.5], batch_size=2),
        "batch_size",
    ),
    case(
        "evaluate_path-chunk_size",
        lambda s: jl.evaluate_path(s.F, s.seg, [0.5], chunk_size=-1),
        "chunk_size",
    ),
    case(
        "evaluate_path-memory_budget",
        lambda s: jl.evaluate_path(s.F, s.seg, [0.5], memory_budget=0),
        "memory_budget",
    ),
    case(
        "evaluate_path-data-with-objective",
        lambda s: jl.evaluate_path(s.F, s.seg, [0.5], data={"x": s.x}),
        "data",
    ),
    case(
        "evaluate_path-data-empty",
        lambda s: jl.evaluate_path(
            lambda p, d: jl.data_loss(p, d["x"], d["y"]),
            s.seg,
            [0.5],
            data={"x": s.x[:0], "y": s.y[:0]},
        ),
        "data",
    ),
    case(
        "evaluate_path-objective-vs-path",
        lambda s: jl.evaluate_path(jl.objective_fn(jnp.ones((6, 3)), s.y, kappa=0.0), s.seg, [0.5]),
        "x",
    ),
    # ---- landscape ------------------------------------------------------------------------------
    case("barrier-empty", lambda s: jl.barrier(jnp.zeros(0)), "values"),
    case("barrier-rank2", lambda s: jl.barrier(jnp.zeros((3, 2))), "values"),
    case("barrier-ts-length", lambda s: jl.barrier(jnp.zeros(3), jnp.linspace(0, 1, 4)), "ts"),
    case("refine_max-tol", lambda s: jl.refine_max(s.F, s.seg, [0.0, 1.0], tol=-1.0), "tol"),
    case(
        "refine_max-num_candidates",
        lambda s: jl.refine_max(s.F, s.seg, [0.0, 1.0], num_candidates=0),
        "num_candidates",
    ),
    case("refine_max-ts-range", lambda s: jl.refine_max(s.F, s.seg, [0.0, 1.5]), "ts"),
    case(
        "path_length-num",
        lambda s: jl.path_length(s.seg, num=-1),
        "num",
    ),
    case("path_length-type", lambda s: jl.path_length("path"), "path"),
    case("geodesic_ratio-ts", lambda s: jl.geodesic_ratio(s.seg, ts=[0.5, 2.0]), "ts"),
    case(
        "random_directions_slice-resolution",
        lambda s: jl.random_directions_slice(
            s.F, s.net, key=s.key, directions=(s.net, s.net_b), resolution=0
        ),
        "resolution",
    ),
    case(
        "random_directions_slice-span",
        lambda s: jl.random_directions_slice(
            s.F, s.net, key=s.key, directions=(s.net, s.net_b), span=-1.0
        ),
        "span",
    ),
    case("random_directions_slice-key", lambda s: jl.random_directions_slice(s.F, s.net), "key"),
    case(
        "filter_normalized_directions-num",
        lambda s: jl.filter_normalized_directions(params=s.net, key=s.key, num=0),
        "num",
    ),
    case(
        "filter_normalized_directions-key",
        lambda s: jl.filter_normalized_directions(params=s.net, key=None),
        "key",
    ),
    case(
        "plane_slice-collinear",
        lambda s: jl.plane_slice(s.F, s.net, s.net_b, s.net_b, resolution=3),
        "c|collinear",
    ),
    case("plane_slice-resolution", lambda s: jl.plane_slice(s.F, s.net, s.net_b, s.two), "c"),
    case(
        "slice_coordinates-type",
        lambda s: jl.slice_coordinates("sl", s.net),
        "sl",
    ),
    case("plot_slice-type", lambda s: jl.plot_slice("sl"), "sl"),
    case("plot_paths-type", lambda s: jl.plot_paths(5), "curves"),
    case("plot_contour-type", lambda s: jl.plot_contour("sl"), "sl"),
    case("plot_surface-type", lambda s: jl.plot_surface("sl"), "sl"),
    case("plot_trajectory-type", lambda s: jl.plot_trajectory("sl", "traj"), "sl|traj"),
    case("plot_spectral_density-type", lambda s: jl.plot_spectral_density("sd"), "sd"),
    case(
        "plot_interpolation-shapes",
        lambda s: jl.plot_interpolation(np.linspace(0, 1, 3), np.ones(4)),
        "loss",
    ),
    # ---- your own models: state and trajectories ---------------------------------------------------
    case("trajectory_directions-type", lambda s: jl.trajectory_directions(s.net), "checkpoints"),
    case("trajectory_directions-one", lambda s: jl.trajectory_directions([s.net]), "checkpoints"),
    case(
        "trajectory_directions-num",
        lambda s: jl.trajectory_directions([s.net, s.net_b, s.net], num=0),
        "num",
    ),
    case(
        "trajectory_slice-traj",
        lambda s: jl.trajectory_slice(s.F, "traj"),
        "traj",
    ),
    case(
        "recompute_batch_stats-state",
        lambda s: jl.recompute_batch_stats(s.net, None, s.x),
        "state",
    ),
    case(
        "recompute_batch_stats-x",
        lambda s: jl.recompute_batch_stats(*_batchnorm(), s.x[:, 0]),
        "x",
    ),
    case(
        "recompute_batch_stats-batch_size",
        lambda s: jl.recompute_batch_stats(*_batchnorm(), s.x, batch_size=0),
        "batch_size",
    ),
    # ---- construct ------------------------------------------------------------------------------
    case("angle_cluster-eps-neg", lambda s: jl.angle_cluster(s.rows, -0.1), "eps"),
    case("angle_cluster-eps-big", lambda s: jl.angle_cluster(s.rows, 4.0), "eps"),
    case("angle_cluster-rows-rank1", lambda s: jl.angle_cluster(s.rows[0], 0.5), "rows"),
    case(
        "angle_cluster-rows-nan",
        lambda s: jl.angle_cluster(
            jnp.asarray(np.where(np.eye(5, 2) > 0, np.nan, np.asarray(s.rows))), 0.5
        ),
        "rows",
    ),
    case(
        "angle_cluster-eps-jit",
        lambda s: jax.block_until_ready(
            jax.jit(lambda e: jax.tree.leaves(jl.angle_cluster(s.rows, e)))(-0.1)
        ),
        "eps",
        exc=Exception,
    ),
    case("merge_plan-l", lambda s: jl.merge_plan(s.rows, 0), "l"),
    case("merge_plan-method", lambda s: jl.merge_plan(s.rows, 2, method="x"), "method"),
    case("lemma9_eps-m", lambda s: jl.lemma9_eps(0, 2, 0.5), "m"),
    case("lemma9_eps-eta", lambda s: jl.lemma9_eps(8, 2, 1.5), "eta"),
    case("lemma9_size_bound-eps", lambda s: jl.lemma9_size_bound(8, 2, 0.0), "eps"),
    case(
        "lemma10-w2-shape",
        lambda s: jl.lemma10(jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0, 0.0]), s.x),
        "w2",
    ),
    case(
        "lemma10-x-rank1",
        lambda s: jl.lemma10(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), jnp.ones(2)),
        "x",
    ),
    case("best_l_term-l", lambda s: jl.best_l_term(s.x, s.y, l=0, kappa=0.0, key=s.key), "l"),
    case(
        "best_l_term-kappa", lambda s: jl.best_l_term(s.x, s.y, l=2, kappa="a", key=s.key), "kappa"
    ),
    case("best_l_term-key", lambda s: jl.best_l_term(s.x, s.y, l=2, kappa=0.0, key=None), "key"),
    case("best_l_term-y", lambda s: jl.best_l_term(s.x, s.y[:, 0], l=2, kappa=0.0, key=s.key), "y"),
    case("best_linear_predictor-y", lambda s: jl.best_linear_predictor(s.x, s.y[:, 0]), "y"),
    case(
        "best_linear_predictor-ridge",
        lambda s: jl.best_linear_predictor(s.x, s.y, ridge=-1.0),
        "ridge",
    ),
    case(
        "linear_objective-W",
        lambda s: jl.linear_objective(jnp.ones((1, 3)), s.x, s.y),
        "W",
    ),
    case(
        "pinv_apply-A",
        lambda s: jl.pinv_apply(jnp.ones(3), jnp.ones((3, 1))),
        "A",
    ),
    case("connect-kappa", lambda s: jl.connect(s.net, s.net_b, s.x, s.y, kappa=-1.0), "kappa"),
    case("connect-eta", lambda s: jl.connect(s.net, s.net_b, s.x, s.y, kappa=0.0, eta=1.5), "eta"),
    case("connect-net_b", lambda s: jl.connect(s.net, s.two, s.x, s.y, kappa=0.0), "net_b"),
    case("construct_path-xi_star", lambda s: jl.construct_path(s.net, s.net_b, "star"), "xi_star"),
    case(
        "certify-path",
        lambda s: jl.certify("p", s.net, s.net_b, s.x, s.y, kappa=0.0, f_star=0.0),
        "path",
    ),
    # ---- search ---------------------------------------------------------------------------------
    case(
        "fit_curve-steps", lambda s: jl.fit_curve(s.F, s.net, s.net_b, steps=0, key=s.key), "steps"
    ),
    case(
        "fit_curve-kind", lambda s: jl.fit_curve(s.F, s.net, s.net_b, kind="x", key=s.key), "kind"
    ),
    case("neb-pivots", lambda s: jl.neb(s.F, s.net, s.net_b, pivots=2), "pivots"),
    case("neb-spring", lambda s: jl.neb(s.F, s.net, s.net_b, spring=-1.0), "spring"),
    case("dss-alpha", lambda s: jl.dss(s.F, s.net, s.net_b, alpha=1.5), "alpha"),
    case(
        "dss_bisect-iterations",
        lambda s: jl.dss_bisect(s.F, s.net, s.net_b, iterations=-1),
        "iterations",
    ),
    case("depth-method", lambda s: jl.depth(s.F, s.net, [s.net_b], method="x"), "method"),
    case("lower_points-num", lambda s: jl.lower_points(s.F, s.net, key=s.key, num=0), "num"),
    case(
        "lower_points-radius",
        lambda s: jl.lower_points(s.F, s.net, key=s.key, radius=0.0),
        "radius",
    ),
    case("search_path-method", lambda s: jl.search_path(s.F, s.net, s.net_b, method="x"), "method"),
    case("pairwise_heights-one", lambda s: jl.pairwise_heights(s.F, [s.net]), "minima"),
    case("barrier_mst-shape", lambda s: jl.barrier_mst(np.zeros((3, 2))), "heights"),
    case("barrier_mst-nan", lambda s: jl.barrier_mst(np.full((3, 3), np.nan)), "heights"),
    case("geodesic_ratio-coincide", lambda s: jl.geodesic_ratio(jnp.ones(3)), "nodes"),
    case(
        "hidden_determinant-x",
        lambda s: jl.hidden_determinant(s.two, jnp.ones((3, 5))),
        "x",
    ),
    case("muller_brown_potential-p", lambda s: jl.muller_brown_potential(jnp.ones(3)), "p"),
    case(
        "permutation_counterexample-kappa",
        lambda s: jl.permutation_counterexample(kappa=0.0),
        "kappa",
    ),
    case(
        "permutation_counterexample-kappa-str",
        lambda s: jl.permutation_counterexample(kappa="a"),
        "kappa",
    ),
    # ---- second order ---------------------------------------------------------------------------
    case("hessian_eigs-k", lambda s: jl.hessian_eigs(s.F, s.net, key=s.key, k=0), "k"),
    case(
        "hessian_eigs-num_steps",
        lambda s: jl.hessian_eigs(s.F, s.net, key=s.key, num_steps=0),
        "num_steps",
    ),
    case(
        "hessian_eigs-which", lambda s: jl.hessian_eigs(s.F, s.net, key=s.key, which="x"), "which"
    ),
    case("hessian_eigs-key", lambda s: jl.hessian_eigs(s.F, s.net, key=None), "key"),
    case("hessian_eigs-fn", lambda s: jl.hessian_eigs("F", s.net, key=s.key), "F|fn"),
    case(
        "hessian_eigs_batch-batch_size",
        lambda s: jl.hessian_eigs_batch(s.F, s.stacked, key=s.key, batch_size=0),
        "batch_size",
    ),
    case(
        "hessian_eigs_along_path-ts",
        lambda s: jl.hessian_eigs_along_path(
            s.F, s.seg, jnp.array([[2.0]]), key=s.key, num_steps=2
        ),
        "ts",
    ),
    case(
        "hessian_trace-num_probes",
        lambda s: jl.hessian_trace(s.F, s.net, key=s.key, num_probes=0),
        "num_probes",
    ),
    case(
        "hessian_trace_batch-point_batch_size",
        lambda s: jl.hessian_trace_batch(s.F, s.stacked, key=s.key, point_batch_size=0),
        "point_batch_size",
    ),
    case(
        "spectral_density-num_steps",
        lambda s: jl.spectral_density(s.F, s.net, key=s.key, num_steps=0),
        "num_steps",
    ),
    case("hvp-v-structure", lambda s: jl.hvp(s.F, s.net, s.two), "v"),
    case("dense_hessian-fn", lambda s: jl.dense_hessian("F", s.net), "F|fn"),
    case(
        "lanczos_tridiag-num_steps",
        lambda s: jl.lanczos_tridiag(lambda v: v, jnp.ones(4), num_steps=0, key=s.key),
        "num_steps",
    ),
    case(
        "lanczos_tridiag-v0-rank2",
        lambda s: jl.lanczos_tridiag(lambda v: v, jnp.ones((2, 2)), num_steps=2, key=s.key),
        "v0",
    ),
    case(
        "classify_critical_point-grad_tol",
        lambda s: jl.classify_critical_point(s.F, s.net, key=s.key, grad_tol=-1.0),
        "grad_tol",
    ),
    case(
        "find_critical_point-method",
        lambda s: jl.find_critical_point(s.F, s.net, key=s.key, method="x"),
        "method",
    ),
    case(
        "find_critical_point-max_steps",
        lambda s: jl.find_critical_point(s.F, s.net, key=s.key, max_steps=0),
        "max_steps",
    ),
    # ---- theory ---------------------------------------------------------------------------------
    case("shamir_bound-y", lambda s: jl.shamir_bound(s.rl, s.x, s.y[:, 0]), "y"),
    case(
        "shamir_check-num_instances",
        lambda s: jl.shamir_check(key=s.key, num_instances=0),
        "num_instances",
    ),
    case("shamir_example1-epsilon", lambda s: jl.shamir_example1(epsilon=-1.0), "epsilon"),
    case(
        "residual_critical_points-num_instances",
        lambda s: jl.residual_critical_points(key=s.key, num_instances=0),
        "num_instances",
    ),
    case("extra_neuron_demo-steps", lambda s: jl.extra_neuron_demo(key=s.key, steps=0), "steps"),
    case("extra_neuron_demo-lam", lambda s: jl.extra_neuron_demo(key=s.key, lam=-1.0), "lam"),
    case(
        "extra_neuron_objective-lam",
        lambda s: jl.extra_neuron_objective(jl.ExtraNeuron.wrap(s.two, key=s.key), s.x, s.y, lam=-1.0),
        "lam",
    ),
    case(
        "unit_free_objective-lam",
        lambda s: jl.unit_free_objective(jl.UnitFree.wrap(s.two), s.x, s.y, lam="a"),
        "lam",
    ),
    case(
        "planted_saddle-net",
        lambda s: jl.planted_saddle("net", key=s.key),
        "net",
    ),
    case(
        "ResidualChain.init-depth",
        lambda s: jl.ResidualChain.init(s.key, d_x=2, depth=0),
        "depth",
    ),
    case("polynomial_hinge-p", lambda s: jl.polynomial_hinge(p=0), "p"),
    case(
        "half_squared_error-shapes",
        lambda s: jl.half_squared_error(jnp.ones((6, 1)), jnp.ones(6)),
        "y",
    ),
    # ---- alignment ------------------------------------------------------------------------------
    case("align-method", lambda s: jl.align(s.net, s.net_b, method="sinkhorn"), "method"),
    case("align-max_iter", lambda s: jl.align(s.net, s.net_b, max_iter=0), "max_iter"),
    case("align-key", lambda s: jl.align(s.net, s.net_b, key=5), "key"),
    case("align-b", lambda s: jl.align(s.net, s.two), "b"),
    case("align-data-nan",
         lambda s: jl.align(s.net, s.net_b, method="activations", data=s.nan_x), "data"),
    case("align-data-shape",
         lambda s: jl.align(s.net, s.net_b, method="activations", data=s.rows[:, :1]), "data"),
    case("align-spec", lambda s: jl.align(s.net, s.net_b, spec=3), "spec"),
    # ---- the digits ResNet of `jaxland figure1` --------------------------------------------------
    case("digits_images-x", lambda s: jl.digits_images(jnp.ones((3, 63))), "x"),
    case("batch_stats_loss-y", lambda s: jl.batch_stats_loss(*_resnet(), jnp.ones((3, 1, 8, 8)),
                                                             jnp.zeros(2, jnp.int32)), "y"),
    case("full_batch_loss-x", lambda s: jl.full_batch_loss(*_resnet(), jnp.ones((3, 8, 8)),
                                                           jnp.zeros(3, jnp.int32)), "x"),
    case("train_digits_resnet-steps",
         lambda s: jl.train_digits_resnet(*_resnet(), jnp.ones((3, 1, 8, 8)),
                                          jnp.zeros(3, jnp.int32), key=s.key, steps=0), "steps"),
    case("repair-t", lambda s: jl.repair(s.net, s.net, s.net_b, 1.5, s.x), "t"),
    case("apply_perms-perms", lambda s: jl.apply_perms(s.net, {"hidden": np.arange(4)}), "perms"),
    case("permutation_spec-groups", lambda s: jl.permutation_spec(s.net, [("W1", 0)]), "groups"),
    # ---- experiments ----------------------------------------------------------------------------
    case("scaling_settings-preset", lambda s: jl.scaling_settings(preset="huge"), "preset"),
    case("scaling_settings-etas", lambda s: jl.scaling_settings(etas=(1.5,)), "etas"),
    case("fit_slope-lengths", lambda s: jl.fit_slope([1, 2], [1.0]), "values"),
    case("fit_slope-floor", lambda s: jl.fit_slope([1, 2], [1.0, 2.0], floor=-1.0), "floor"),
    case("format_table-report", lambda s: jl.format_table({}), "report"),
    case("scaling-out-file", lambda s: jl.scaling(__file__, preset="tiny"), "out"),
]


@pytest.mark.parametrize(("call", "exc", "name"), CASES)
def test_bad_input_is_refused_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call(S())
    msg = str(info.value)
    assert msg, f"{type(info.value).__name__} without a message"
    assert _names(msg, name), f"the message does not name {name!r}: {msg[:300]!r}"


def _names(msg: str, name: str) -> bool:
    import re

    return re.search(rf"(?<![\w.]){name}(?!\w)|(?<![\w.])({name})(?=\[)", msg) is not None


def test_every_public_function_has_a_case():
    """The table covers every public function and model constructor of the three namespaces."""
    import inspect

    ids = {p.id.split("-")[0] for p in CASES}
    missing = []
    for mod in (jl, jp, jd):
        for nm in dir(mod):
            obj = getattr(mod, nm)
            if nm.startswith("_") or not inspect.isfunction(obj):
                continue
            if nm in NOT_TABLED:
                continue
            if nm not in ids:
                missing.append(f"{mod.__name__}.{nm}")
    assert not missing, f"no bad-input case for {missing}"


# functions that take no argument a user could get wrong, or only a free-form one
NOT_TABLED = {
    "relu",  # elementwise max(z, 0): any array
    "default_memory_budget",  # device=None or a device
    "muller_brown",  # no arguments
    "check_same_structure",  # itself the check (raises naming its own `names`)
    "tree_index",
    "tree_norm",  # pytree helpers re-exported for paths
    "trainable",  # any pytree: splits its arrays into parameters and the rest
}
