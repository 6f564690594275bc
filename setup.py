# The project's metadata is in pyproject.toml; this shim keeps `python setup.py ...` working
# and declares the one C extension (zsup/core/_spawn.c: spawning without setpriv). It is
# optional: without a C compiler zsup installs anyway and spawns through setpriv.
from setuptools import Extension, setup

setup(ext_modules=[Extension("zsup.core._spawn", ["zsup/core/_spawn.c"], optional=True)])
