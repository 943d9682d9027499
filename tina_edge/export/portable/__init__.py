"""The torch-free half of export: rewrites of an existing bundle with onnx / onnxruntime tooling.

`tina-edge convert` runs them without the [train] extra; `tina-edge export` runs them after the
torch exporters (export/bundle.py, graphs.py, text_encoder.py) have written the graphs:

    generate.py      add_portable_files: every conversion step in order, the template in input form,
                     tokenizer_config.json, the manifest's `portable` section
    generate_graph.py generate.onnx as a graph (the DDIM steps around the denoiser in one Loop)
    weight_only.py   int8 / float16 weight storage rewrites that keep outputs batch-independent
    ort_format.py    ORT-format graphs and required_operators.config for onnxruntime-mobile
    static_shapes.py the template's run-time padding as constants (phones: NNAPI / CoreML in one partition)
    conformance.py   the vectors that check the JavaScript package against the Python runtime
"""
