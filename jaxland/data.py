"""`jaxland.data`: bounded synthetic problems and bundled real data sets (see `jaxland._data`)."""

from ._data import (
    DATASETS,
    Dataset,
    default_problem,
    diabetes,
    digits,
    load,
    sphere_classification,
    sphere_points,
    sphere_teacher,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "default_problem",
    "diabetes",
    "digits",
    "load",
    "sphere_classification",
    "sphere_points",
    "sphere_teacher",
]
