"""Numerical operators shared by geolesf models (selective scan for the Mamba-style SSMs)."""
