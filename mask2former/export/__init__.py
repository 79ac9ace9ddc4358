"""Export of the image models to ONNX and TorchScript (issue 14)."""
