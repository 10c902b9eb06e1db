"""Options of ``tfpipeline cluster``: the TF_CONFIG of each worker of a multi-worker training cluster."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from tfpipeline.config.options import check_positive, opt
from tfpipeline.errors import ConfigError


@dataclass
class ClusterConfig:
    workers: Optional[int] = opt(None, "N workers on this machine, on free loopback ports (to try a cluster out)")
    hosts: List[str] = opt(help="host:port of every worker, chief first, for machines you start yourself "
                           "(Kubernetes and Vertex AI set TF_CONFIG for you)", factory=list)
    index: Optional[int] = opt(None, "print only this worker's TF_CONFIG, as JSON (for export TF_CONFIG=$(...))")

    def validate(self) -> "ClusterConfig":
        check_positive(self, "workers")
        if bool(self.workers) == bool(self.hosts):
            raise ConfigError("give either --workers N (this machine) or --hosts host:port,... (one per worker)")
        if self.index is not None and self.index < 0:
            raise ConfigError(f"index must be >= 0, got {self.index}")
        return self
