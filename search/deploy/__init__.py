"""The model handed over, outside the search: export it (`export`: TorchScript, ONNX, state_dict +
model.json) and classify new images with it (`predict`)."""
