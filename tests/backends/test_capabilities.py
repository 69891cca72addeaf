"""The CPU capability probe's training rule: optim.precision auto takes bf16 only where it pays (AMX-BF16);
AVX512-BF16 alone measured slower than fp32 for the demo models' training steps."""
from __future__ import annotations

import logging

import pytest

from rsd_deploy.backends import capabilities


@pytest.mark.parametrize("flags, requested, expected", [
    ({"avx512_bf16", "avx512f"}, "auto", "fp32"),
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "auto", "bf16"),
    ({"avx512_bf16"}, "bf16", "bf16"),
    ({"avx2", "fma"}, "auto", "fp32"),
    ({"avx2"}, "fp32", "fp32"),
    ({"avx512_bf16"}, "fp32", "fp32"),
    ({"avx2"}, "bf16", "bf16"),  # an explicit choice is kept (and warned about, below)
])
def test_training_precision_on_cpus(monkeypatch, flags, requested, expected):
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset(flags))
    assert capabilities.training_precision(requested, "cpu") == expected


def test_explicit_bf16_without_native_bf16_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.WARNING, logger=capabilities.__name__):
        capabilities.training_precision("bf16", "cpu")
    assert "emulated" in caplog.text and "optim.precision=auto" in caplog.text
    caplog.clear()
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with caplog.at_level(logging.WARNING, logger=capabilities.__name__):
        capabilities.training_precision("bf16", "cpu")
    assert caplog.text == ""
