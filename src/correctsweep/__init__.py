"""correctsweep: sweeps of error correctors for neural classifiers on imbalanced classes."""

__version__ = "0.1.0"
