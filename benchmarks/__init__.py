"""The benchmarks, each a module run from the repository root: `python -m benchmarks.NAME`; what they
share is in `benchmarks.common`, their committed results under benchmarks/results/."""
