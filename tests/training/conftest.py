"""Training tests run torch on one thread (tests/threads.py)."""
from threads import one_torch_thread  # noqa: F401  (an autouse fixture)
