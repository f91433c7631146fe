"""Quantization: onnxruntime post-training quantization of an exported graph (`ort`), calibration
readers, and the record a quantized model carries so later passes can refuse to undo it."""
