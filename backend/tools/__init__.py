"""Developer and user tooling that drives the pipeline: evaluation, benchmarks, the example.

Tools call the same pipeline as the server, so what they measure is what users get; the
runtime never imports from here.
"""
