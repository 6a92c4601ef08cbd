"""ItemGate benchmarks: each hot path measured against the limit beneath it (`make bench`)."""
