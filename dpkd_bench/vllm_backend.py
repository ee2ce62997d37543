"""Evaluation decoding with vLLM (``eval.backend: vllm``), in place of the built-in decoder.

:class:`VllmDecoder` has the interface of :func:`dpkd_bench.generate.generate_texts`: token-id
prompts in, response texts out, in input order. vLLM is imported only when a recipe asks for it;
without it the run stops in the preflight with one ``error:`` line.

- **Model:** the engine loads the evaluated model from its saved directory (the runner's
  ``student/``, ``student_init/``, the cached teacher, or a pretrained teacher's name). Its own
  tokenizer is never loaded (``skip_tokenizer_init``): prompts go in as token ids, responses come
  back as token ids and are decoded here with the project tokenizer exactly as the built-in
  decoder's are (cut at the first EOS, special tokens dropped, stripped).
- **Settings:** greedy is temperature 0; top-k 0 (off) is vLLM's -1; temperature, top-p and
  ``max_new_tokens`` (vLLM's ``max_tokens``) as they are; decoding stops at the tokenizer's EOS.
- **Seeds:** prompt ``i`` of a call with seed ``s`` is sampled with its own vLLM seed
  :func:`request_seed` ``(s, i)``, so a response does not depend on what else is in the batch.
  The random streams are vLLM's, not the built-in decoder's: sampled responses differ from it
  for the same seed (greedy ones only through numerics: kernels, the engine's dtype), and the
  built-in decoder stays the reference.
- **One process:** vLLM runs one engine per machine, and the processes of ``accelerate launch``
  or ``torchrun`` each hold a GPU with their training state; the runner refuses that combination
  before anything trains (:func:`check_processes`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import torch

from dpkd_bench.errors import UserError
from dpkd_bench.generate import DecodeSettings, cut_at_eos, response_texts

VLLM_TOP_K_OFF = -1  # vLLM's "no top-k filter" (newer releases also read 0 so; -1 works in all)
FALLBACK = "or set eval.backend=hf to use the built-in decoder"


def import_vllm():
    """The ``vllm`` module, or a one-line user error saying why it cannot be used."""
    try:
        import vllm
    except ImportError as err:
        if err.name == "vllm":
            raise UserError(
                "eval.backend=vllm needs the vllm package, which is not installed here; install "
                f"it on a CUDA machine (pip install vllm) {FALLBACK}"
            ) from None
        raise UserError(
            f"eval.backend=vllm: the vllm package is installed but fails to import (it needs "
            f"'{err.name}', which is missing); repair the install (pip install -U vllm) "
            f"{FALLBACK}"
        ) from None
    except Exception as err:  # a broken install: a CUDA library, a version clash
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise UserError(
            f"eval.backend=vllm: the vllm package is installed but fails to import "
            f"({type(err).__name__}: {detail}); repair the install (pip install -U vllm) "
            f"{FALLBACK}"
        ) from None
    return vllm


def check_processes(processes: int) -> None:
    """vLLM evaluation runs on one process: refuse a run of several."""
    if processes > 1:
        raise UserError(
            f"eval.backend=vllm runs one vLLM engine on one process, but this run has "
            f"{processes} processes (accelerate launch / torchrun), each holding a GPU with its "
            "training state; run it as one process (dpkd-bench run ...) "
            f"{FALLBACK}, which shares evaluation over all processes"
        )


def request_seed(seed: int, index: int) -> int:
    """The vLLM seed of prompt ``index`` in a call with seed ``seed`` (distinct per prompt)."""
    return (seed * 1_000_003 + index) % 2**63


def sampling_params(vllm, settings: DecodeSettings, eos_id: int, seed: int):
    """vLLM's ``SamplingParams`` for one prompt under ``settings``."""
    return vllm.SamplingParams(
        n=1,
        temperature=0.0 if settings.greedy else settings.temperature,
        top_k=settings.top_k if settings.top_k > 0 else VLLM_TOP_K_OFF,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        seed=seed,
        stop_token_ids=[eos_id],
        skip_special_tokens=True,
        detokenize=False,  # the project tokenizer decodes (response_texts)
    )


def free_gpu_memory() -> None:
    """Drop unreferenced objects and hand cached CUDA memory back to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class VllmDecoder:
    """One vLLM engine on one saved model, built once and used for every eval set and seed.

    Use it as a context manager (or call :meth:`close`): leaving it releases the engine and its
    GPU memory before the next model's engine is built.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        trust_remote_code: bool = False,
        gpu_memory_utilization: float = 0.5,
    ):
        self.vllm = import_vllm()
        self.model_dir = str(model_dir)
        free_gpu_memory()  # what training left in PyTorch's cache counts against vLLM's share
        self.llm = self.vllm.LLM(
            model=self.model_dir,
            trust_remote_code=trust_remote_code,
            gpu_memory_utilization=gpu_memory_utilization,
            skip_tokenizer_init=True,
        )

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        settings: DecodeSettings,
        *,
        eos_id: int,
        seed: int,
        progress: str | None = None,
    ) -> list[list[int]]:
        """Responses (token ids, cut before the first EOS) in input order."""
        if self.llm is None:
            raise RuntimeError(f"the vLLM engine of {self.model_dir} was closed")
        requests = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        params = [
            sampling_params(self.vllm, settings, eos_id, request_seed(seed, i))
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=progress is not None)
        if len(outputs) != len(prompts):
            raise RuntimeError(
                f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts "
                f"({self.model_dir})"
            )
        return [cut_at_eos(out.outputs[0].token_ids, eos_id) for out in outputs]

    def generate_texts(
        self,
        tokenizer,
        prompts: Sequence[Sequence[int]],
        settings: DecodeSettings,
        *,
        seed: int,
        progress: str | None = None,
    ) -> list[str]:
        """Response texts, as :func:`dpkd_bench.generate.generate_texts` returns them."""
        ids = self.generate_ids(
            prompts, settings, eos_id=tokenizer.eos_token_id, seed=seed, progress=progress
        )
        return response_texts(tokenizer, ids)

    def close(self) -> None:
        """Release the engine and its GPU memory."""
        self.llm = None
        free_gpu_memory()

    def __enter__(self) -> VllmDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
