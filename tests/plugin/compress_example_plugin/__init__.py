"""An example compress plug-in: an `ort-optimize` stage, an `onnxruntime-basic` runtime and a
`crash-on-load` runtime (for tests: it kills its process loading some models)."""
