"""Tests for the constructive paths of Theorem 11, Freeman & Bruna and Lemma 7 (jaxland/construct/).

One small SkipNet problem is built once (float64) and probed densely along its path; the tests then
check the claims of the proof step by step. Sizes are tiny and shapes are shared between cases so the
jitted construction and evaluation compile only a few times.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses

import jaxland
from jaxland.construct._steps import PINV_RTOL_FACTOR, _branch_norms
from jaxland.construct._theorem_path import _eval_chunks
from jaxland.model._objective import data_loss
from jaxland.model._regularizer import regularizer

N, n, M, DY, L = 32, 3, 12, 2, 3
KAPPA = 0.05
PTS = 41  # probe points per segment


def _data(key):
    x = jax.random.normal(key, (N, n))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.stack([jnp.sin(2 * x[:, 0]) + x[:, 1], jnp.abs(x[:, 2]) - 0.5], axis=1)
    return x, y


@eqx.filter_jit
def _probe(path, x, y, ks, ss):
    """F, data loss, R, predictions, W2V1, the parameters themselves and the pseudoinverse
    diagnostics at the local times ss[c] of segment ks[c] (the certificate's chunked evaluator: one
    segment per chunk)."""

    def fn(net):
        prod = net.W2 @ net.V1 if isinstance(net, jaxland.SkipNet) else jnp.zeros(())
        L_ = data_loss(net, x, y)
        R = regularizer(net)
        return dict(F=L_ + KAPPA * R, L=L_, R=R, pred=net(x), prod=prod, net=net)

    out, ratio, res = _eval_chunks(path, fn, ks, ss)
    return dict(out, ratio=ratio, res=res)


def _local_grid(S):
    """t of PTS local points on every segment (ends included); k and s of each."""
    s = np.linspace(0.0, 1.0, PTS)
    k = np.repeat(np.arange(S), PTS)
    ss = np.tile(s, S)
    return (k + ss) / S, k, ss


def _tree_equal(a, b):
    return all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _skip_nets():
    ka, kb, ks, kr = jax.random.split(jax.random.PRNGKey(1), 4)
    a = jaxland.SkipNet.init(ka, n=n, m=M, d_y=DY, d_g=3, d_o=3, hidden=(3,), residual_scale=1.0)
    # rows of W1 with norms far from 1 (step 1a has work to do) and one zero row (policy: freed first)
    scale = jax.random.uniform(kr, (M, 1), minval=0.3, maxval=3.0)
    a = eqx.tree_at(lambda t: t.W1, a, (a.W1 * scale).at[5].set(0.0))
    b = jaxland.SkipNet.init(kb, n=n, m=M, d_y=DY, d_g=3, d_o=3, hidden=(3,), residual_scale=1.0)
    star = jaxland.TwoLayer.init(ks, n=n, m=L, d_y=DY)
    return a, b, star


def _case(a, b, star, x, y):
    path, pa, pb = jaxland.construct_path(a, b, star, eps=0.8)
    S = path.num_segments
    ts, k, s = _local_grid(S)
    ss = jnp.asarray(np.tile(np.linspace(0.0, 1.0, PTS), (S, 1)))
    pr = _probe(path, x, y, jnp.arange(S, dtype=jnp.int32), ss)
    # the states at the ends of every segment (s = 1 and s = 0 of the grid), to check the joints
    nets = jax.tree.map(np.asarray, pr.pop("net"))
    pr = jax.tree.map(lambda v: np.asarray(v).reshape(S * PTS, *v.shape[2:]), pr)
    gap = max(np.max(np.abs(leaf[:-1, -1] - leaf[1:, 0])) for leaf in jax.tree.leaves(nets))
    return dict(
        path=path, pa=pa, pb=pb, probe=pr, k=k, s=s, names=path.names,
        start_exact=_tree_equal(path(0.0), a), end_exact=_tree_equal(path(1.0), b),
        joint_gap=float(gap),
        f_a=float(jaxland.objective(a, x, y, kappa=KAPPA)),
        f_b=float(jaxland.objective(b, x, y, kappa=KAPPA)),
    )


@pytest.fixture(scope="module")
def skip():
    with jax.enable_x64(True):
        x, y = _data(jax.random.PRNGKey(0))
        a, b, star = _skip_nets()
        out = _case(a, b, star, x, y)
        # the 3b segment of half A: its start state and the constants of the convex bound
        j3b = out["names"].index("A.3b last layer to W2*")
        seg = out["path"].segments[j3b]
        out["branch_R"] = float(jnp.sum(_branch_norms(seg.net)))
        out["K"] = seg.K
        out["j3b"] = j3b
        # a second net B that shares part of A's freed slots: A with some rows redirected
        freed_a = np.asarray(out["pa"].freed)
        W1 = a.W1.at[freed_a[1:]].set(jax.random.normal(jax.random.PRNGKey(7), (L - 1, n)))
        b2 = eqx.tree_at(lambda t: t.W1, a, W1)
        out["overlap"] = _case(a, b2, star, x, y)
        res = jaxland.connect(a, b, x, y, kappa=KAPPA, eta=0.5, xi_star=star, n_points=65,
                              refine_points=9, refine_levels=2)
        out["cert"] = res.certificate
        out["cert_dict"] = res.certificate.to_dict()
        # rank failures: W2 with proportional rows has rank 1 < d_y = 2 all along step 2
        a_def = eqx.tree_at(lambda t: t.W2, a, jnp.stack([a.W2[0], -2 * a.W2[0]]))
        out["cert_def"] = jaxland.connect(a_def, b, x, y, kappa=KAPPA, eta=0.5, xi_star=star,
                                          n_points=65, refine_points=9, refine_levels=2).certificate
        out["star_F"] = float(jaxland.objective(star, x, y, kappa=KAPPA))
    return out


def _same(stack, ref):
    """Every entry of the stack equals ref to float64 rounding (1e-10 relative, 1e-12 absolute)."""
    np.testing.assert_allclose(stack, np.broadcast_to(ref, stack.shape), rtol=1e-10, atol=1e-12)


def _seg(case, name):
    j = case["names"].index(name)
    sel = case["k"] == j
    return {key: v[sel] for key, v in case["probe"].items()}, case["s"][sel]


def test_exact_endpoints_and_continuity(skip):
    for case in (skip, skip["overlap"]):
        assert case["start_exact"] and case["end_exact"]  # bit-exact γ(0) = net_a, γ(1) = net_b
        # consecutive segments meet: only the pseudoinverse is recomputed there (float64 rounding)
        assert case["joint_gap"] <= 1e-9
        # F at the end of segment k equals F at the start of segment k + 1 (same t, two formulas)
        F = case["probe"]["F"].reshape(-1, PTS)
        np.testing.assert_allclose(F[:-1, -1], F[1:, 0], rtol=1e-10)
        # no jumps inside segments: on a 41-point grid per segment F moves by a fraction of its range
        # between neighbouring points (a jump would be of the order of the range)
        assert np.max(np.abs(np.diff(F, axis=1))) <= 0.2 * (np.max(F) - np.min(F))


def test_step1_keeps_F_and_R_never_increases_in_steps_1_2(skip):
    f1a, _ = _seg(skip, "A.1a normalise rows")
    f1b, _ = _seg(skip, "A.1b balance branch")
    # 1a: exact ReLU rescaling; F and f1 equal to 1e-10 relative (float64 rounding of the scalings)
    np.testing.assert_allclose(f1a["F"], skip["f_a"], rtol=1e-10)
    _same(f1a["pred"], f1a["pred"][0])
    # 1b: f1 unchanged, R non-increasing (AM–GM balancing)
    _same(f1b["pred"], f1a["pred"][0])
    R = np.concatenate([_seg(skip, f"A.{s}")[0]["R"] for s in
                        ("1a normalise rows", "1b balance branch", "2a project V1", "2b merge")])
    assert np.all(np.diff(R) <= 1e-12 * R[0])
    assert R[-1] < R[0]  # the merge really moved weight (the test can fail)


def test_merge_keeps_W2V1(skip):
    p2a, _ = _seg(skip, "A.2a project V1")
    p2b, _ = _seg(skip, "A.2b merge")
    Z = p2a["prod"][0]
    assert np.all(p2b["ratio"] > PINV_RTOL_FACTOR * np.finfo(np.float64).eps)  # rank W2(t) = d_y
    np.testing.assert_allclose(p2b["prod"], np.broadcast_to(Z, p2b["prod"].shape), rtol=1e-9,
                               atol=1e-12)
    assert np.max(p2b["res"]) <= 1e-10
    _same(p2a["pred"], p2a["pred"][0])


def test_step3_convex_bound(skip):
    p3a, _ = _seg(skip, "A.3a rotate freed rows")
    # 3a: the freed rows have zero outgoing weights, so f is unchanged; rebalancing lowers R
    _same(p3a["pred"], p3a["pred"][0])
    assert np.all(np.diff(p3a["F"]) <= 1e-12)
    p3b, s = _seg(skip, "A.3b last layer to W2*")
    u = 1 - (1 - s) ** skip["K"]
    Ls, Lstar = p3b["L"][0], p3b["L"][-1]
    Fs, Fstar = p3b["F"][0], p3b["F"][-1]
    assert Fstar == pytest.approx(skip["star_F"], rel=1e-10)  # ends at ξ* exactly
    # f(s) = (1 − u) f_s + u f*: the data loss is under the chord (convexity), 1e-12 rounding
    assert np.all(p3b["L"] <= (1 - u) * Ls + u * Lstar + 1e-12)
    # F adds κ R, which is under the chord up to the branch term the paper's proof drops
    extra = KAPPA * skip["branch_R"] * ((1 - s) - (1 - s) ** skip["K"])
    assert np.all(p3b["F"] <= (1 - u) * Fs + u * Fstar + extra + 1e-12)


def test_join_constant_F(skip):
    for case in (skip, skip["overlap"]):
        for name in ("join.1 rotate B's new slots", "join.2 move W2* columns",
                     "join.3 rotate unused rows"):
            pj, _ = _seg(case, name)
            np.testing.assert_allclose(pj["F"], skip["star_F"], rtol=1e-10)
            _same(pj["pred"], pj["pred"][0])
    fa = set(np.asarray(skip["overlap"]["pa"].freed).tolist())
    fb = set(np.asarray(skip["overlap"]["pb"].freed).tolist())
    assert 0 < len(fa & fb) < L  # the slot sets overlap partially (the case the join must handle)


def test_certificate(skip):
    c, d = skip["cert"], skip["cert_dict"]
    # f_max is a maximum over a superset of the probe's 41-point grid refined; the brute-force
    # grid differs, so allow the second-order gap between grid points: F'' h² with h = 1/64 on
    # a segment (F'' ≤ 10 here), below 3e-3; rounding 1e-12.
    brute = max(np.max(skip["probe"]["F"]), skip["f_a"], skip["f_b"])
    assert float(c.f_max) >= brute - 3e-3
    assert float(c.f_max) <= brute + 3e-3
    assert d["f_a"] == pytest.approx(skip["f_a"], rel=1e-12)
    assert d["excess"] == pytest.approx(d["f_max"] - max(d["f_a"], d["f_b"], d["f_star"]))
    assert d["l"] == L and d["rank_failures"] == 0 and d["dims_ok"]
    assert d["attained_by"] in c.segment_names and d["model"] == "SkipNet"
    assert 0 <= d["max_merge_angle"] <= np.pi
    assert len(d["segment_max"]) == len(c.segment_names)
    # the rank-deficient W2 is detected and reported
    assert int(skip["cert_def"].rank_failures) > 0
    assert float(skip["cert_def"].min_sigma_ratio) < 1e-10


def test_certificate_exact_max_on_its_grid(skip):
    # certify's grid (65 points per segment) contains the probe grid's multiples of 1/8 of each
    # segment, so there f_max can only be larger, up to rounding
    keep = np.isclose((skip["s"] * 8) % 1, 0) | np.isclose((skip["s"] * 8) % 1, 1)
    assert float(skip["cert"].f_max) >= np.max(skip["probe"]["F"][keep]) - 1e-12


def _two_layer_excess(m, seeds=3):
    with jax.enable_x64(True):
        x, y = _data(jax.random.PRNGKey(0))
        star = jaxland.TwoLayer(W1=jnp.eye(2, n), W2=jnp.array([[0.5, -0.5], [0.2, 0.3]]))
        out = []
        for s in range(seeds):
            ka, kb = jax.random.split(jax.random.PRNGKey(10 + s))

            def net(k):
                k1, k2 = jax.random.split(k)
                W1 = jax.random.normal(k1, (m, n))
                return jaxland.TwoLayer(W1=W1 / jnp.linalg.norm(W1, axis=1, keepdims=True),
                                        W2=jax.random.normal(k2, (DY, m)) * 4 / m)

            a, b = net(ka), net(kb)
            r = jaxland.connect(a, b, x, y, kappa=0.01, eta=0.5, xi_star=star, method="greedy",
                                n_points=33, refine_levels=1)
            if s == 0 and m == 8:  # the eager call compiles once per shape: check one width
                assert type(r.path(0.0)) is jaxland.TwoLayer
                assert _tree_equal(r.path(0.0), a) and _tree_equal(r.path(1.0), b)
            out.append(r.certificate)
        return out


def test_two_layer_excess_shrinks_with_m():
    # Theorem 11 / Freeman & Bruna: the excess is O(merge angle), which shrinks as m grows
    small = _two_layer_excess(8)
    large = _two_layer_excess(64)
    ex_s = np.mean([float(c.excess) for c in small])
    ex_l = np.mean([float(c.excess) for c in large])
    assert ex_l < ex_s
    assert np.mean([float(c.max_merge_angle) for c in large]) < np.mean(
        [float(c.max_merge_angle) for c in small])
    assert all(c.model == "TwoLayer" for c in small)


def _residual(key, d_x, d_y, d_z):
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, (N, d_x))
    y = x @ jax.random.normal(k2, (d_x, d_y)) + 0.3 * jnp.abs(x[:, :1])
    a = jaxland.ResidualLinear.init(k3, d_x=d_x, d_y=d_y, d_z=d_z, hidden=(4,))
    b = jaxland.ResidualLinear.init(jax.random.fold_in(k3, 1), d_x=d_x, d_y=d_y, d_z=d_z,
                                    hidden=(4,))
    return a, b, x, y


def test_residual_linear_lemma7():
    with jax.enable_x64(True):
        a, b, x, y = _residual(jax.random.PRNGKey(3), 3, 1, 2)
        r = jaxland.connect(a, b, x, y, kappa=0.0, n_points=65)
        c = r.certificate
        assert _tree_equal(r.path(0.0), a) and _tree_equal(r.path(1.0), b)
        # Theorem 6 with κ = 0: F ≤ max(F_A, F_B, F_w*) along the path, exact up to rounding
        assert float(c.excess) <= 1e-10
        assert bool(c.dims_ok) and int(c.rank_failures) == 0
        assert float(c.max_invariant_residual) <= 1e-10
        # ξ* is the least-squares predictor: F* ≤ both endpoints here is not required, but F* is
        # the linear optimum, so no linear W does better
        Wls = jnp.linalg.lstsq(x, y)[0].T
        assert float(c.f_star) <= float(jnp.mean(jnp.sum((x @ Wls.T - y) ** 2, 1))) + 1e-10
        # One ξ* for Theorem 6: the path runs through W* = best_linear_predictor(x, y, kappa=κ), the
        # minimiser of F(W, 0, 0) = mean L + κ‖W‖₁ (least squares for κ = 0, the ℓ1 problem for κ > 0)
        for kappa, res in ((0.0, r), (0.1, jaxland.connect(a, b, x, y, kappa=0.1, n_points=65))):
            blp = jaxland.best_linear_predictor(x, y, kappa=kappa)
            j = res.path.names.index("A.L2 shrink theta")
            star = res.path.segment(j, 1.0)  # ξ*_A = (W*, 0, 0), the end of the first half
            # W(1) = 0·W_A + 1·W* of the L1 segment: W* up to float64 rounding
            np.testing.assert_allclose(star.W, blp.net.W, rtol=1e-12, atol=1e-14)
            assert not np.any(np.asarray(star.V)) and not any(np.any(t) for t in star.theta)
            assert float(res.certificate.f_star) == pytest.approx(float(blp.value), rel=1e-12)


def test_residual_linear_remark_4_1():
    # d_y = 3 > d_x = 2: W V is always low rank, Lemma 7's proof does not apply (Remark 4.1)
    with jax.enable_x64(True):
        a, b, x, y = _residual(jax.random.PRNGKey(4), 2, 3, 4)
        with pytest.warns(UserWarning, match="Remark 4.1"):
            r = jaxland.connect(a, b, x, y, kappa=0.0, n_points=17)
        c = r.certificate
        assert not bool(c.dims_ok)
        assert int(c.rank_failures) > 0
        assert _tree_equal(r.path(0.0), a) and _tree_equal(r.path(1.0), b)


def test_construct_path_jits():
    # the construction traces with abstract inputs (eps and t traced too), i.e. it jits; eval_shape
    # checks this without paying for a second compilation
    with jax.enable_x64(True):
        a, b, star = _skip_nets()
        f = lambda a, b, s, e, t: jaxland.construct_path(a, b, s, eps=e)[0](t)
        out = jax.eval_shape(f, a, b, star, jnp.asarray(0.8), jnp.asarray(0.37))
    assert type(out) is jaxland.SkipNet and out.W1.shape == (M, n)


def test_bad_input():
    with jax.enable_x64(True):  # the fixture's dtype: the one construct_path below hits its cache
        _bad_input()


def _bad_input():
    a, b, star = _skip_nets()
    x, y = _data(jax.random.PRNGKey(0))
    two = jaxland.TwoLayer.init(jax.random.PRNGKey(0), n=n, m=M, d_y=DY)
    with pytest.raises(TypeError, match="same type"):
        jaxland.connect(a, two, x, y, kappa=0.1, xi_star=star)
    with pytest.raises(TypeError, match="NoSkipNet"):
        nos = jaxland.NoSkipNet(a.W1, a.W2, a.V1, a.V2, a.theta)
        jaxland.connect(nos, nos, x, y, kappa=0.1, xi_star=star)
    with pytest.raises(ValueError, match="eta"):
        jaxland.connect(a, b, x, y, kappa=0.1, eta=1.5, xi_star=star)
    with pytest.raises(ValueError, match="kappa"):
        jaxland.connect(a, b, x, y, kappa=-1.0, xi_star=star)
    with pytest.raises(ValueError, match="x must have shape"):
        jaxland.connect(a, b, x[:, :2], y, kappa=0.1, xi_star=star)
    with pytest.raises(ValueError, match="l = 2 but xi_star has 3"):
        jaxland.connect(a, b, x, y, kappa=0.1, l=2, xi_star=star)
    with pytest.raises(TypeError, match="xi_star must be a TwoLayer"):
        jaxland.connect(a, b, x, y, kappa=0.1, xi_star=a)
    with pytest.raises(ValueError, match="key is required"):
        jaxland.connect(a, b, x, y, kappa=0.1)
    big = jaxland.TwoLayer.init(jax.random.PRNGKey(0), n=n, m=M // 2 + 1, d_y=DY)
    with pytest.raises(ValueError, match="m/2"):
        jaxland.construct_path(a, b, big, eps=0.5)
    with pytest.raises(ValueError, match="eps is needed"):
        jaxland.construct_path(a, b, star)
    with pytest.raises(ValueError, match=r"eps must be an angle in \(0, π\]; got -0.1"):
        jaxland.construct_path(a, b, star, eps=-0.1)
    for bad in (0.0, 1.0, float("nan"), "0.5"):  # η ∈ (0, 1), named in the message
        assert_refuses(lambda: jaxland.connect(a, b, x, y, kappa=0.1, eta=bad, xi_star=star), "eta",
                       ValueError, match=r"eta must be a number in \(0, 1\)")
    assert_refuses(  # connect is a driver
        lambda: jax.jit(lambda e: jaxland.connect(a, b, x, y, kappa=0.1, eta=e, xi_star=star))(0.5),
        "eta", TypeError, match="eta must be a concrete number")
    with pytest.raises(ValueError, match="net_a"):
        small = jaxland.SkipNet.init(jax.random.PRNGKey(0), n=n, m=M - 1, d_y=DY, d_g=3, d_o=3,
                                     hidden=(3,))
        jaxland.construct_path(a, small, star, eps=0.5)
    with pytest.raises(TypeError, match="Linear"):
        r = jaxland.ResidualLinear.init(jax.random.PRNGKey(0), d_x=n, d_y=1)
        jaxland.construct_path(r, r, star)
    with pytest.raises(ValueError, match="n_points"):
        jaxland.certify(jaxland.construct_path(a, b, star, eps=0.8)[0], a, b, x, y, kappa=0.1,
                        f_star=0.0, n_points=1)
