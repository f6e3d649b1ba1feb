"""An example compress plug-in: an `ort-optimize` stage and an `onnxruntime-basic` runtime."""
