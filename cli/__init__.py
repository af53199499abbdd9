"""NERE: named-entity recognition and relation extraction at corpus scale.

Sub-packages: :mod:`nere.engine` (runtime, no torch), :mod:`nere.train` (PyTorch
models and training), :mod:`nere.export` (checkpoint -> ONNX bundle).
"""
__version__ = "0.1.0"
