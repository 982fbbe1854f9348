"""Datasets: the catalog (``geolesf.data.catalog``), downloads (``geolesf.data.fetch``),
dataset readers, samplers and split protocols.

Nothing heavy is imported here; import the submodule you need.
"""
