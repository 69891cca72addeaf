"""Benchmarks: device-synchronised timing, contenders x backends runner, quality, report writer."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["benchmark_and_report"]


def benchmark_and_report(config, progress: bool = True, notes: Optional[List[str]] = None,
                         **run_kwargs) -> Dict[str, Path]:
    """Run ``config`` (a ``runner.BenchConfig``) and write results.json/.md/.png into ``config.output``."""
    from rsd_deploy.bench.quality import run_quality
    from rsd_deploy.bench.report import finalize, write_report
    from rsd_deploy.bench.runner import run_benchmark

    results = run_benchmark(config, progress=progress, quality=run_quality, **run_kwargs)
    return write_report(finalize(results, config.device, notes), Path(config.output))
