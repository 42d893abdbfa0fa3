# pyproject.toml holds the project; this file exists only because cffi's build hook has no pyproject form.
from setuptools import setup

setup(cffi_modules=["runc/build_engine.py:ffibuilder"])
