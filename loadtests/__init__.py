"""Load tests for canarygate: an open-loop generator, wrk scripts, the side-by-side bench and
a rollout scenario. Run from the project root, e.g. ``python -m loadtests.bench --quick``."""
