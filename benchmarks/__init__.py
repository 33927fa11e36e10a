"""Speed and memory benchmarks (``make bench``); not part of ``make test``."""
