"""`python -m jaxland`: the same command line as `jaxland`."""

import sys

from .experiments._cli import main

sys.exit(main())
