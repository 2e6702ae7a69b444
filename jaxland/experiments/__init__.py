"""The experiments behind the command line: `jaxland reproduce` (the paper's construction on the
default problem, resumable), `jaxland scaling` (the width-scaling study of Theorem 11), `jaxland
alignment` (does the skip connection's advantage survive permutation alignment?), `jaxland figure1`
(the paper's Figure 1 measured: deep residual CNNs with and without shortcuts), the run store that
makes them resumable, and the CLI itself."""

from ._alignment import (
    alignment as alignment,
    alignment_settings as alignment_settings,
    format_alignment_table as format_alignment_table,
)
from ._figure1 import (
    figure1 as figure1,
    figure1_settings as figure1_settings,
    format_figure1_markdown as format_figure1_markdown,
    format_figure1_table as format_figure1_table,
)
from ._scaling import (
    fit_slope as fit_slope,
    format_table as format_table,
    replot_scaling as replot_scaling,
    scaling as scaling,
    scaling_settings as scaling_settings,
)
