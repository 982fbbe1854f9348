"""Tests of the QGIS Processing provider. Not named ``tests/qgis``: scripts in ``tests/`` run under QGIS's
Python (``tests/qgis_check.py``) would import that folder instead of QGIS's own ``qgis`` package."""
