"""TinyMath: how small can a language model be and still do arithmetic?"""

__version__ = "0.1.0"
