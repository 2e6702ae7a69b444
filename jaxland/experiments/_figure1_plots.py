"""The figures of `jaxland figure1`: figure1.png (3-D surfaces, as the paper's Figure 1),
contours.png, nonconvexity.png, interpolation.png, and figure1.html (interactive 3-D surfaces drawn
by a small inlined canvas renderer: no JavaScript library, no network, one file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TITLE_DRAWN = "figure1: surfaces drawn"


def _nets_by_depth(report: dict) -> list[tuple[int, list[tuple[str, dict]]]]:
    """[(depth, [(name, record) for no-skip, skip])] in the order of the settings' depths."""
    out = []
    for d in report["settings"]["depths"]:
        pair = [(n, r) for n, r in report["nets"].items() if r["depth"] == d]
        pair.sort(key=lambda nr: nr[1]["skip"])  # no-skip first, as the paper's (a), (b)
        if pair:  # (a partial report may not have every depth yet)
            out.append((d, pair))
    return out


def z_cap(pair: list[tuple[str, dict]]) -> float:
    """The common top of the colour and z scale of one depth: the loss is clipped there (as Li et
    al. clip their surfaces), at the smaller of 10 and the largest loss of the pair."""
    hi = max(float(np.max(np.asarray(r["surface"]["loss"], np.float64))) for _, r in pair)
    return float(min(hi, 10.0))


def _hide_empty(axes) -> None:
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.set_axis_off()


def _title(name: str, r: dict) -> str:
    kind = "with" if r["skip"] else "without"
    return f"ResNet-{r['depth']} {kind} skip connections\ntraining loss {r['loss']:.3g}, " \
           f"accuracy {r['accuracy']:.3f}"


def plot_all(out: Path, report: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    files = [_surfaces(out, report), _contours(out, report), _nonconvexity(out, report),
             _interpolation(out, report), _html(out, report)]
    return files


def _surfaces(out: Path, report: dict) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    groups = _nets_by_depth(report)
    fig = plt.figure(figsize=(11, 4.6 * len(groups)), dpi=110)
    for row, (_, pair) in enumerate(groups):
        cap = z_cap(pair)
        lo = min(float(np.min(r["surface"]["loss"])) for _, r in pair)
        norm = Normalize(lo, cap)
        for name, r in pair:
            col = int(r["skip"])  # (a) without, (b) with skip connections
            ax = fig.add_subplot(len(groups), 2, 2 * row + col + 1, projection="3d")
            al = np.asarray(r["surface"]["alphas"])
            be = np.asarray(r["surface"]["betas"])
            Z = np.minimum(np.asarray(r["surface"]["loss"], np.float64), cap)
            A, B = np.meshgrid(al, be, indexing="ij")
            ax.plot_surface(A, B, Z, cmap="viridis", norm=norm, rstride=1, cstride=1,
                            linewidth=0, antialiased=True)
            ax.set_zlim(lo, cap)
            ax.set_xlabel("α")
            ax.set_ylabel("β")
            ax.set_zlabel("loss", labelpad=8)
            ax.view_init(elev=35, azim=-60)
            ax.set_title(_title(name, r), fontsize=10)
    fig.suptitle("Training loss on a filter-normalised random plane through the trained minimum "
                 "(Li et al. 2018), 8×8 digits\nsame z and colour scale in a row; the loss is "
                 "clipped at the row's top", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "figure1.png")
    plt.close(fig)
    return "figure1.png"


def _contours(out: Path, report: dict) -> str:
    import matplotlib.pyplot as plt

    groups = _nets_by_depth(report)
    fig, axes = plt.subplots(len(groups), 2, figsize=(9.5, 4.3 * len(groups)), dpi=110,
                             squeeze=False)
    for row, (_, pair) in enumerate(groups):
        cap = z_cap(pair)
        lo = min(float(np.min(r["surface"]["loss"])) for _, r in pair)
        levels = np.linspace(lo, cap, 21)
        for name, r in pair:
            col = int(r["skip"])  # (a) without, (b) with skip connections
            ax = axes[row][col]
            al = np.asarray(r["surface"]["alphas"])
            be = np.asarray(r["surface"]["betas"])
            Z = np.minimum(np.asarray(r["surface"]["loss"], np.float64), cap)
            A, B = np.meshgrid(al, be, indexing="ij")
            cs = ax.contourf(A, B, Z, levels=levels, cmap="viridis")
            ax.contour(A, B, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
            ax.plot([0], [0], "r*", ms=9)
            ax.set_aspect("equal")
            ax.set_xlabel("α")
            ax.set_ylabel("β")
            ax.set_title(_title(name, r), fontsize=9)
            fig.colorbar(cs, ax=ax, format="%.3g").set_label("loss (clipped)")
    _hide_empty(axes)
    fig.suptitle("Contours of the training loss on the plane (★: the trained minimum)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "contours.png")
    plt.close(fig)
    return "contours.png"


def _nonconvexity(out: Path, report: dict) -> str:
    import matplotlib.pyplot as plt

    groups = _nets_by_depth(report)
    thr = report["settings"]["nonconvex_threshold"]
    fig, axes = plt.subplots(len(groups), 2, figsize=(9.5, 4.3 * len(groups)), dpi=110,
                             squeeze=False)
    for row, (_, pair) in enumerate(groups):
        for name, r in pair:
            col = int(r["skip"])  # (a) without, (b) with skip connections
            ax = axes[row][col]
            h = r["hessian"]
            al, be = np.asarray(h["alphas"]), np.asarray(h["betas"])
            R = np.asarray(h["ratio"], np.float64)
            step_a = (al[1] - al[0]) if len(al) > 1 else 1.0
            step_b = (be[1] - be[0]) if len(be) > 1 else 1.0
            im = ax.imshow(R.T, origin="lower", cmap="magma", vmin=0, vmax=1,
                           extent=(al[0] - step_a / 2, al[-1] + step_a / 2,
                                   be[0] - step_b / 2, be[-1] + step_b / 2))
            # the basin's edge: F = ln 10, the loss of the uniform prediction
            sa, sb = np.asarray(r["surface"]["alphas"]), np.asarray(r["surface"]["betas"])
            SA, SB = np.meshgrid(sa, sb, indexing="ij")
            Zs = np.asarray(r["surface"]["loss"], np.float64)
            if Zs.min() < np.log(10) < Zs.max():
                ax.contour(SA, SB, Zs, levels=[np.log(10)], colors="cyan", linewidths=1.2)
            for i, a in enumerate(al):
                for j, b in enumerate(be):
                    ax.text(a, b, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if R[i, j] < 0.5 else "black")
            ax.set_xlabel("α")
            ax.set_ylabel("β")
            kind = "with" if r["skip"] else "without"
            ax.set_title(f"ResNet-{r['depth']} {kind} skip: r > {thr} at "
                         f"{100 * h['nonconvex_fraction']:.0f}% of points", fontsize=9)
            fig.colorbar(im, ax=ax).set_label("max(0, −λ_min) / max(|λ_min|, |λ_max|)")
    _hide_empty(axes)
    fig.suptitle("Non-convexity |λ_min/λ_max| of the Hessian on a sub-grid of the plane "
                 "(Lanczos; 0 = no negative curvature found)\ncyan: the basin's edge, where the "
                 "loss equals ln 10 (uniform prediction)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "nonconvexity.png")
    plt.close(fig)
    return "nonconvexity.png"


def _interpolation(out: Path, report: dict) -> str:
    import matplotlib.pyplot as plt

    groups = _nets_by_depth(report)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), dpi=110,
                             squeeze=False)
    for col, (d, pair) in enumerate(groups):
        ax = axes[0][col]
        for name, r in pair:
            seg = r["segment"]
            kind = "with skip" if r["skip"] else "without skip"
            ax.plot(seg["t_refined"], seg["loss_refined"], "-",
                    label=f"{kind}: barrier {seg['barrier']:.3f}")
            ax.plot([seg["t_max"]], [seg["f_max"]], "kx", ms=6)
        lo = min(float(np.min(r["segment"]["loss_refined"])) for _, r in pair)
        hi = max(float(np.max(r["segment"]["loss_refined"])) for _, r in pair)
        if lo > 0 and hi / lo > 20:  # a log scale only where the losses span decades
            ax.set_yscale("log")
        ax.set_xlabel("t  (θ = (1 − t) θ_A + t θ_B)")
        ax.set_ylabel("training loss")
        ax.set_title(f"ResNet-{d}: straight segment between two minima", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "interpolation.png")
    plt.close(fig)
    return "interpolation.png"


# --------------------------------------------------------------------------------------------------
# figure1.html: a self-contained page with rotatable 3-D surfaces
# --------------------------------------------------------------------------------------------------

_JS = r"""
(function () {
  var DATA = JSON.parse(document.getElementById("figure1-data").textContent);
  var VIRIDIS = [[68,1,84],[72,35,116],[64,67,135],[52,94,141],[41,120,142],[32,144,140],
                 [34,167,132],[68,190,112],[121,209,81],[189,222,38],[253,231,37]];
  function colour(t) {
    t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(t), VIRIDIS.length - 2), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }
  var view = {yaw: -0.9, pitch: 0.6};
  var plots = [];
  function draw(p) {
    var c = p.canvas, ctx = c.getContext("2d"), W = c.width, H = c.height, s = p.surf;
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
    var n = s.z.length, m = s.z[0].length, cy = Math.cos(view.yaw), sy = Math.sin(view.yaw);
    var cp = Math.cos(view.pitch), sp = Math.sin(view.pitch), sc = Math.min(W, H) * 0.34;
    function P(i, j) {  // grid point -> [screen x, screen y, depth]
      var x = 2 * i / (n - 1) - 1, y = 2 * j / (m - 1) - 1;
      var z = 1.4 * (Math.min(s.z[i][j], s.zmax) - s.zmin) / (s.zmax - s.zmin) - 0.7;
      var X = cy * x - sy * y, Y = sy * x + cy * y;
      return [W / 2 + sc * X, H * 0.55 - sc * (cp * z - sp * Y), cp * Y + sp * z];
    }
    var pts = [];
    for (var i = 0; i < n; i++) { pts.push([]); for (var j = 0; j < m; j++) pts[i].push(P(i, j)); }
    var quads = [];
    for (var i = 0; i < n - 1; i++) for (var j = 0; j < m - 1; j++) {
      var q = [pts[i][j], pts[i + 1][j], pts[i + 1][j + 1], pts[i][j + 1]];
      var zm = (Math.min(s.z[i][j], s.zmax) + Math.min(s.z[i + 1][j], s.zmax) +
                Math.min(s.z[i + 1][j + 1], s.zmax) + Math.min(s.z[i][j + 1], s.zmax)) / 4;
      // Lambert shading from the screen-space normal of the quad (light from the viewer, above)
      var ax = q[2][0] - q[0][0], ay = q[2][1] - q[0][1], az = q[2][2] - q[0][2];
      var bx = q[3][0] - q[1][0], by = q[3][1] - q[1][1], bz = q[3][2] - q[1][2];
      var nx = ay * bz - az * by, ny = az * bx - ax * bz, nz = ax * by - ay * bx;
      var nn = Math.sqrt(nx * nx + ny * ny + nz * nz) || 1;
      var shade = 0.55 + 0.45 * Math.abs((0.3 * nx - 0.8 * ny + 0.5 * nz) / nn);
      var cc = colour((zm - s.zmin) / (s.zmax - s.zmin));
      quads.push({q: q, d: (q[0][2] + q[1][2] + q[2][2] + q[3][2]) / 4,
                  c: [cc[0] * shade, cc[1] * shade, cc[2] * shade]});
    }
    quads.sort(function (a, b) { return b.d - a.d; });  // painter's algorithm: far ones first
    for (var k = 0; k < quads.length; k++) {
      var q = quads[k].q, col = quads[k].c;
      ctx.beginPath(); ctx.moveTo(q[0][0], q[0][1]);
      for (var e = 1; e < 4; e++) ctx.lineTo(q[e][0], q[e][1]);
      ctx.closePath();
      var rgb = "rgb(" + (col[0] | 0) + "," + (col[1] | 0) + "," + (col[2] | 0) + ")";
      ctx.fillStyle = rgb; ctx.fill(); ctx.strokeStyle = rgb; ctx.lineWidth = 0.6; ctx.stroke();
    }
    ctx.fillStyle = "#222"; ctx.font = "12px sans-serif";
    ctx.fillText("loss " + s.zmin.toPrecision(3) + " (dark) .. " + s.zmax.toPrecision(3) +
                 " (yellow, clipped)", 8, H - 8);
    p.drawn = true;
  }
  function drawAll() { for (var i = 0; i < plots.length; i++) draw(plots[i]); }
  var grid = document.getElementById("plots");
  DATA.surfaces.forEach(function (s) {
    var box = document.createElement("div"); box.className = "plot";
    var h = document.createElement("h3"); h.textContent = s.title; box.appendChild(h);
    var c = document.createElement("canvas"); c.width = 460; c.height = 380; box.appendChild(c);
    var note = document.createElement("p"); note.textContent = s.note; box.appendChild(note);
    grid.appendChild(box);
    plots.push({canvas: c, surf: s, drawn: false});
    var drag = null;
    c.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY]; });
    window.addEventListener("mouseup", function () { drag = null; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      view.yaw += 0.01 * (e.clientX - drag[0]);
      view.pitch = Math.max(-0.2, Math.min(1.5, view.pitch + 0.01 * (e.clientY - drag[1])));
      drag = [e.clientX, e.clientY]; drawAll();
    });
  });
  drawAll();
  var n = plots.filter(function (p) { return p.drawn; }).length;
  document.body.setAttribute("data-drawn", String(n));
  if (n === plots.length && n > 0) document.title = "__TITLE__";
})();
"""

_CSS = """
body { font-family: sans-serif; margin: 16px; color: #222; }
#plots { display: grid; grid-template-columns: repeat(2, 480px); gap: 12px; }
.plot { border: 1px solid #ccc; padding: 6px; }
.plot h3 { font-size: 14px; margin: 2px 0 4px 0; }
.plot p { font-size: 12px; margin: 2px 0; }
canvas { cursor: grab; display: block; }
"""


def _html(out: Path, report: dict) -> str:
    surfaces = []
    for _, pair in _nets_by_depth(report):
        cap = z_cap(pair)
        lo = min(float(np.min(r["surface"]["loss"])) for _, r in pair)
        for name, r in pair:
            Z = np.round(np.asarray(r["surface"]["loss"], np.float64), 5)
            kind = "with" if r["skip"] else "without"
            surfaces.append({
                "name": name, "title": f"ResNet-{r['depth']} {kind} skip connections",
                "note": (f"training loss {r['loss']:.3g}, accuracy {r['accuracy']:.3f}; "
                         f"non-convex fraction {r['hessian']['nonconvex_fraction']:.2f}; "
                         f"barrier {r['barrier']:.3g}"),
                "z": Z.tolist(), "zmin": lo, "zmax": cap})
    data = json.dumps({"surfaces": surfaces}, separators=(",", ":"))
    s = report["settings"]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>figure1</title><style>{_CSS}</style></head>
<body>
<h2>The paper's Figure 1, measured: loss surfaces with and without skip connections</h2>
<p>Training loss of residual CNNs on scikit-learn's 8×8 digits on a plane through the trained
minimum spanned by two filter-normalised random directions (Li et al. 2018), α, β ∈
[−{s['span']}, {s['span']}], {s['grid']} × {s['grid']} grid. Drag a surface to rotate all of them.
Same z and colour scale for the two nets of a depth. Made by <code>jaxland figure1</code>
(preset {s['preset']}).</p>
<div id="plots"></div>
<script type="application/json" id="figure1-data">{data}</script>
<script>{_JS.replace("__TITLE__", TITLE_DRAWN)}</script>
</body></html>
"""
    (out / "figure1.html").write_text(page, encoding="utf-8")
    return "figure1.html"
