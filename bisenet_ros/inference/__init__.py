"""The forward pass: backends and the one runner factory (create_runner), the backend cache,
CPU facts, BatchNorm folding, ONNX export and int8 ONNX models, and the postprocess to full-resolution labels."""
