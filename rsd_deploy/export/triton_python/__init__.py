"""Triton Python-backend models (copied verbatim into a model repository as ``<model>/1/model.py``).

They import only numpy (and Triton's ``triton_python_backend_utils`` inside the server), so the
stock Triton container runs them; their pure-numpy helpers are importable and tested here.
"""
