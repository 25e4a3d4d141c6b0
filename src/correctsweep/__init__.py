"""correctsweep: sweeps of error correctors for neural classifiers on imbalanced classes."""

__version__ = "0.1.0"
__all__ = ["load_corrected"]


def __getattr__(name: str):
    # lazily: importing predict imports torch, which the CLI should pay for only in the commands that need it
    if name == "load_corrected":
        from correctsweep.entry import load_corrected

        return load_corrected
    raise AttributeError(f"module 'correctsweep' has no attribute {name!r}")
