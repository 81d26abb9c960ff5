"""One module per filter, and ``types``: the hooks a filter may have (typed protocols) and the check the
pipeline makes when it is built. The order they run in is ``proxy.pipeline.ORDER``, and nowhere else."""
