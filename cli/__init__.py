"""NERE: named-entity recognition and relation extraction at corpus scale.

Sub-packages: :mod:`nere.engine` (runtime, no torch), :mod:`nere.train` (PyTorch
models and training), :mod:`nere.export` (checkpoint -> ONNX bundle), :mod:`nere.bench`
(``nere bench``). The ``nere`` command is :mod:`nere.cli`; its training, evaluation and
study commands are :mod:`nere.train_commands`, :mod:`nere.evaluate_command` and
:mod:`nere.study_command`.
"""
__version__ = "0.1.0"
