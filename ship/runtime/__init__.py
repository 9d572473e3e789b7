"""The standalone runtime copied into every package: it imports only numpy, onnxruntime, tokenizers and the
standard library (ship/runtime/predict.py)."""
