"""The Alpaca prompt template used by MiniLLM, DistiLLM and DPKD for every instruction set."""

from __future__ import annotations

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
RESPONSE_MARKER = "### Response:\n"


def build_prompt(instruction: str, input_text: str = "") -> str:
    """Wrap an instruction (and its optional input) in the Alpaca template."""
    if input_text and input_text.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction.strip(), input=input_text.strip())
    return PROMPT_NO_INPUT.format(instruction=instruction.strip())


def ensure_template(prompt: str) -> str:
    """Apply the template to a bare instruction; leave an already templated prompt alone."""
    if RESPONSE_MARKER in prompt:
        return prompt
    return build_prompt(prompt)
