"""Export: PyTorch checkpoint -> self-contained ONNX bundle the engine runs without torch."""
