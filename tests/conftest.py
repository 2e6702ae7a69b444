import os

# Tests run on the CPU; keep XLA from grabbing every thread for one small op at a time.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import hypothesis

hypothesis.settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
