"""The figures of jaxland.landscape._plot (issue 13, §3): each is written to a file that is not
empty, and has the axis labels it should. Slices, trajectories and densities are built directly (no
evaluation), except one trajectory plane computed end to end."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from conftest import assert_refuses

import jaxland as jl

matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


def bowl_slice(n=21):
    """F(α, β) = (α² + 3β²)/2 + cos(3α), on [−2, 2]²: two valleys, a saddle between them."""
    al, be = np.linspace(-2, 2, n), np.linspace(-2, 2, n + 2)
    A, B = np.meshgrid(al, be, indexing="ij")
    Z = (A**2 + 3 * B**2) / 2 + np.cos(3 * A)
    z = jnp.zeros(2)
    return jl.Slice(jnp.asarray(Z), jnp.asarray(al), jnp.asarray(be), z, z, z, jnp.zeros((1, 2)))


def saved(fig, tmp_path, name):
    path = tmp_path / name
    fig.savefig(path, dpi=60)
    assert path.exists() and path.stat().st_size > 1000  # a PNG with content, not a stub
    plt.close(fig)
    return path


def test_plot_interpolation(tmp_path):
    ts = np.linspace(0, 1, 11)
    loss = {"train": 1 + np.sin(np.pi * ts), "test": 1.2 + np.sin(np.pi * ts)}
    acc = {"train": 1 - 0.3 * np.sin(np.pi * ts), "test": 0.9 - 0.3 * np.sin(np.pi * ts)}
    ax, ax2 = jl.plot_interpolation(ts, loss, acc, title="segment")
    assert ax.get_xlabel() == "t" and ax.get_ylabel() == "loss"
    assert ax2.get_ylabel() == "accuracy"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["loss (train)", "loss (test)", "accuracy (train)", "accuracy (test)"]
    # the loss and the accuracy of one label share a colour; the accuracy is dashed
    lines = ax.get_lines() + ax2.get_lines()
    assert lines[0].get_color() == lines[2].get_color() and lines[2].get_linestyle() == "--"
    saved(ax.figure, tmp_path, "interp.png")
    ax, ax2 = jl.plot_interpolation(ts, loss["train"], xlabel="α")
    assert ax2 is None and ax.get_xlabel() == "α"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match=r"accuracy\['test'\] must have the shape of ts"):
        jl.plot_interpolation(ts, loss, {"test": ts[:3]})
    with pytest.raises(ValueError, match=r"ts must have shape \(P,\)"):
        jl.plot_interpolation(ts[:1], ts[:1])


def test_plot_contour_and_surface(tmp_path):
    sl = bowl_slice()
    ax = jl.plot_contour(sl, {"line": np.array([[-1.5, 0.0], [1.5, 0.0]])}, levels=8)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("α", "β")
    assert len(ax.texts) >= 4  # the level labels (clabel)
    assert "line" in [ln.get_label() for ln in ax.get_lines()]
    saved(ax.figure, tmp_path, "contour.png")
    ax = jl.plot_contour(sl, levels=[0.0, 1.0, 2.0], log=False, fmt="%.1f")
    assert {t.get_text() for t in ax.texts} <= {"0.0", "1.0", "2.0"}
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="levels must be"):
        jl.plot_contour(sl, levels=[2.0, 1.0])
    ax = jl.plot_surface(sl, zmax=4.0, title="bowl")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("α", "β", "F")
    saved(ax.figure, tmp_path, "surface.png")
    ax = jl.plot_surface(sl, log=True)
    assert ax.get_zlabel() == "log10(F - min F)"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="3-D Axes"):
        jl.plot_surface(sl, ax=plt.subplots()[1])
    plt.close("all")


def test_plot_trajectory_end_to_end(tmp_path):
    """Gradient descent on an anisotropic quadratic: its plane, the loss on it, the picture."""
    H = jnp.diag(jnp.array([3.0, 1.0, 0.3, 0.1]))
    theta = {"w": jnp.array([1.0, -2.0, 1.5, 1.0])}
    cks = [theta]
    for _ in range(12):
        theta = {"w": theta["w"] - 0.2 * H @ theta["w"]}
        cks.append(theta)
    traj = jl.trajectory_directions(cks, num=2)
    F = lambda p: 0.5 * p["w"] @ H @ p["w"]  # noqa: E731
    sl = jl.trajectory_slice(F, traj, resolution=(9, 7))
    coords = np.asarray(traj.coordinates)
    assert sl.values.shape == (9, 7)
    # the grid covers every checkpoint
    assert np.all(coords[:, 0] >= float(sl.alphas[0])) and np.all(
        coords[:, 0] <= float(sl.alphas[-1])
    )
    assert np.all(coords[:, 1] >= float(sl.betas[0])) and np.all(
        coords[:, 1] <= float(sl.betas[-1])
    )
    # the plane passes through θ_T: F at (0, 0) is F(θ_T) (float32 sums of 4 terms)
    i, j = np.argmin(np.abs(sl.alphas)), np.argmin(np.abs(sl.betas))
    point = jax.tree.map(
        lambda o, u, v: o + sl.alphas[i] * u + sl.betas[j] * v, sl.origin, sl.u, sl.v
    )
    np.testing.assert_allclose(sl.values[i, j], F(point), rtol=1e-5)
    ax = jl.plot_trajectory(sl, traj)
    r = np.asarray(traj.explained_variance_ratio)
    assert ax.get_xlabel() == f"1st PC ({100 * r[0]:.1f}% of the variance)"
    assert ax.get_ylabel() == f"2nd PC ({100 * r[1]:.1f}% of the variance)"
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "trajectory")
    np.testing.assert_allclose(line.get_xydata(), coords)
    saved(ax.figure, tmp_path, "trajectory.png")
    with pytest.raises(ValueError, match="at least 2 directions"):
        jl.trajectory_slice(F, jl.trajectory_directions(cks, num=1))
    assert_refuses(lambda: jl.plot_trajectory(sl, coords), "traj", TypeError,
                   match="traj must be a TrajectoryDirections")


def test_plot_spectral_density(tmp_path):
    # Two probes, Ritz values around a bulk near 0 and one outlier at 10 (PyHessian's picture)
    nodes = jnp.array([[-0.2, 0.0, 0.1, 10.0], [-0.1, 0.05, 0.2, 9.8]])
    weights = jnp.array([[0.3, 0.4, 0.29, 0.01], [0.35, 0.35, 0.29, 0.01]])
    sd = jl.SpectralDensity(nodes, weights)
    ax = jl.plot_spectral_density(sd, mark=[10.0], title="Hessian")
    assert ax.get_xlabel() == "eigenvalue" and ax.get_ylabel() == "density (log scale)"
    assert ax.get_yscale() == "log"
    x, y = ax.get_lines()[0].get_xydata().T
    # the drawn curve is the SLQ density: it integrates to ≈ 1 over the grid (the grid covers ±5σ
    # around every node, so the Gaussian tails outside it are below 1e-6)
    assert abs(np.trapezoid(y, x) - 1.0) < 1e-3
    assert x[np.argmax(y)] < 1.0 and y[np.argmin(np.abs(x - 9.9))] > 1e-3 * y.max()
    saved(ax.figure, tmp_path, "density.png")
    assert_refuses(lambda: jl.plot_spectral_density((nodes, weights)), "sd", TypeError,
                   match="sd must be a jaxland.SpectralDensity")
    with pytest.raises(ValueError, match="sigma must be"):
        jl.plot_spectral_density(sd, sigma=-1.0)
