"""Label-free detectors of the unseen class (see base for what each reads and how it is thresholded)."""

from correctsweep.detectors.base import Detection, Detector, FinalLayer, detect, threshold, validate

__all__ = ["Detection", "Detector", "FinalLayer", "detect", "threshold", "validate"]
