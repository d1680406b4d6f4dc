"""The A/B benchmark suite (legacy vs async on one workload) and micro-benchmarks."""
