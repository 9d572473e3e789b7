"""`mbtb package`: one variant of a run as a self-contained folder (model files, a numpy/onnxruntime/tokenizers
runtime, requirements, a model card, a sha256 manifest). The top floor: it reads bench's manifest and timings and
distill's run; the runtime it copies (ship/runtime/predict.py) imports nothing from the harness."""
