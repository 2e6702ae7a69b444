"""The landscape around paths and points: barriers and the refined maximum of a path, path length and
the geodesic ratio, 2-D slices (the plane through three points; Li et al.'s filter-normalised random
directions; the plane of a training trajectory's principal directions) and their plots."""

from ._metrics import (
    BarrierResult as BarrierResult,
    RefineResult as RefineResult,
    barrier as barrier,
    geodesic_ratio as geodesic_ratio,
    path_length as path_length,
    refine_max as refine_max,
)
from ._plot import (
    plot_contour as plot_contour,
    plot_interpolation as plot_interpolation,
    plot_paths as plot_paths,
    plot_slice as plot_slice,
    plot_spectral_density as plot_spectral_density,
    plot_surface as plot_surface,
    plot_trajectory as plot_trajectory,
)
from ._slices import (
    Slice as Slice,
    filter_normalized_directions as filter_normalized_directions,
    plane_slice as plane_slice,
    random_directions_slice as random_directions_slice,
    slice_coordinates as slice_coordinates,
)
from ._trajectory import (
    TrajectoryDirections as TrajectoryDirections,
    trajectory_directions as trajectory_directions,
    trajectory_slice as trajectory_slice,
)
