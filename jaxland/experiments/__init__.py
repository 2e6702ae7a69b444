"""The experiments behind the command line: `jaxland reproduce` (the paper's construction on the
default problem, resumable), `jaxland scaling` (the width-scaling study of Theorem 11), `jaxland
alignment` (does the skip connection's advantage survive permutation alignment?), the run store that
makes them resumable, and the CLI itself."""

from ._alignment import (
    alignment as alignment,
    alignment_settings as alignment_settings,
    format_alignment_table as format_alignment_table,
)
from ._scaling import (
    fit_slope as fit_slope,
    format_table as format_table,
    replot_scaling as replot_scaling,
    scaling as scaling,
    scaling_settings as scaling_settings,
)
