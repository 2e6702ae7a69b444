"""Data: bounded synthetic problems on the sphere (the paper's setting: bounded x, y) and bundled real
data sets (scikit-learn's digits and diabetes, extra `data`)."""

from ._datasets import (
    DATASETS as DATASETS,
    Dataset as Dataset,
    default_problem as default_problem,
    diabetes as diabetes,
    digits as digits,
    load as load,
    sphere_classification as sphere_classification,
    sphere_points as sphere_points,
    sphere_teacher as sphere_teacher,
)
