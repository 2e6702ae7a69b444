import os

# Tests run on the CPU, small problems compiled once each: compile time dominates the suite, so XLA's
# backend optimisation is turned down (measured: tests/test_any_model.py 53 s -> 37 s on one core). The
# programs compute the same values (the float64 exactness tests run under these flags); they only run
# slower, which the tiny test sizes do not feel. Benchmarks never set these flags.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), _FAST_COMPILE) if f).strip()

import hypothesis

hypothesis.settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
