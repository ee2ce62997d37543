"""Word-level KD (Hinton et al. 2015; Kim & Rush 2016): forward KL to the teacher, mixed with CE."""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class KDConfig(MixedConfig):
    temperature: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        require(self.temperature > 0, "temperature", "must be > 0")


class KD(TokenLevelMethod):
    name = "kd"
    search_space = {"kd_ratio": (0.5, 1.0)}  # MiniLLM's KD: 0.5
    paper = "Hinton et al. 2015, arXiv 1503.02531; as run in MiniLLM, arXiv 2306.08543"
    Config = KDConfig

    def divergence(self, student_logits, teacher_logits):
        return losses.token_forward_kl(student_logits, teacher_logits, self.config.temperature)

    def use_teacher_cache(self, cache):
        if self.config.temperature != 1.0:
            raise ValueError(
                f"{self.name}: the teacher cache holds temperature-1 log-probabilities; "
                f"temperature={self.config.temperature} needs the exact teacher "
                f"(set {self.name}.teacher_cache_k=0)"
            )
        super().use_teacher_cache(cache)
