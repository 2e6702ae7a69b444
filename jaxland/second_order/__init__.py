"""Second order, matrix-free: Hessian-vector products, Lanczos and the extreme eigenvalues of ∇²F (at a
point, a batch of points, along a path), the spectral density (SLQ), the Hutchinson trace, and the
search and classification of critical points."""

from ._critical import (
    CriticalKind as CriticalKind,
    CriticalPoint as CriticalPoint,
    classify_critical_point as classify_critical_point,
    find_critical_point as find_critical_point,
)
from ._density import (
    SpectralDensity as SpectralDensity,
    TraceEstimate as TraceEstimate,
    hessian_trace as hessian_trace,
    hessian_trace_batch as hessian_trace_batch,
    spectral_density as spectral_density,
)
from ._hessian import (
    HessianEigs as HessianEigs,
    dense_hessian as dense_hessian,
    hessian_eigs as hessian_eigs,
    hessian_eigs_along_path as hessian_eigs_along_path,
    hessian_eigs_batch as hessian_eigs_batch,
    hvp as hvp,
)
from ._lanczos import Tridiag as Tridiag, lanczos_tridiag as lanczos_tridiag
