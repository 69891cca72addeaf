# This folder holds Triton Inference Server examples (client.py), not a Python package. A test or
# tool that puts export/ on sys.path would otherwise make `import triton` find this folder and
# shadow the Triton compiler package that torch probes for (breaking torch.onnx.export/compile).
raise ImportError("export/triton is an examples folder, not the 'triton' package; run export/triton/client.py directly")
