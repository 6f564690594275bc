# The project's metadata is in pyproject.toml; this shim keeps `python setup.py ...` working.
from setuptools import setup

setup()
