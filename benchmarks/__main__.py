"""``python -m benchmarks``: the A/B benchmark suite (see :mod:`benchmarks.ab`)."""

from benchmarks.ab import bench_app

if __name__ == "__main__":
    bench_app(prog_name="python -m benchmarks")
