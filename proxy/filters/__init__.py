"""One module per filter. The order they run in is ``proxy.pipeline.ORDER``, and nowhere else."""
