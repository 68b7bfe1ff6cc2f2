"""Ways to run the model besides plain PyTorch: ONNX Runtime, OpenVINO and their variants."""
