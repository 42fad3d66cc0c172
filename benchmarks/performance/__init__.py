"""The performance suite's sections, one module each; ``benchmarks.run`` registers and runs them."""
