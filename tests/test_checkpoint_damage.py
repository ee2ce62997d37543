"""A damaged checkpoint is skipped with a warning (the previous one or the start serves), and
SIGTERM makes the loop checkpoint before the process ends."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.checkpoint import checkpoint_step, kept_dir
from dpkd_bench.cli import main
from dpkd_bench.errors import Terminated
from dpkd_bench.methods import get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train

from .conftest import context, items


def run(tokenizer, make_model, checkpoint_dir, steps=4, every=2, stream=None):
    student = make_model(seed=2)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, checkpoint_every=every)
    stream = stream or BatchStream(items(tokenizer, 8), 4, seed=0)
    ctx = context(tokenizer, student)
    train(
        get_method("sft"),
        student,
        cfg,
        stream,
        ctx,
        Accelerator(cpu=True),
        None,
        "t",
        checkpoint_dir,
    )
    return student


def warnings(capsys) -> list[str]:
    """The warning lines on stderr (the progress bars write there too)."""
    err = capsys.readouterr().err.replace("\r", "\n")
    return [line for line in err.splitlines() if line.startswith("warning:")]


def same_weights(a, b) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(
    tokenizer, make_model, tmp_path, capsys
):
    whole = run(tokenizer, make_model, None)
    ck = tmp_path / "checkpoint"
    run(tokenizer, make_model, ck, every=1)  # the last two checkpoints: steps 4 and 3
    assert checkpoint_step(ck) == 4 and checkpoint_step(kept_dir(ck)) == 3
    (ck / "meta.json").write_bytes(b"\xff\xfe\x00garbage")  # what a bad disk leaves
    assert checkpoint_step(ck) == 3
    warning = warnings(capsys)
    assert len(warning) == 1 and warning[0].startswith(f"warning: checkpoint {ck} cannot be read")
    assert "UnicodeDecodeError" in warning[0]
    resumed = run(tokenizer, make_model, ck)  # step 4 again, from the checkpoint of step 3
    assert same_weights(resumed, whole)


def test_with_no_readable_checkpoint_the_unit_starts_over(tokenizer, make_model, tmp_path, capsys):
    ck = tmp_path / "checkpoint"
    run(tokenizer, make_model, ck, steps=3, every=2)
    state = ck / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated
    weights = kept_dir(ck) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert checkpoint_step(ck) is None
    assert len(warnings(capsys)) == 2
    assert same_weights(run(tokenizer, make_model, ck), run(tokenizer, make_model, None))


class TermAtSecondBatch(BatchStream):
    """Sends this process SIGTERM while the second batch is drawn."""

    def next_batch(self):
        self.drawn = getattr(self, "drawn", 0) + 1
        if self.drawn == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().next_batch()


def test_sigterm_checkpoints_the_step_then_stops(tokenizer, make_model, tmp_path):
    ck = tmp_path / "checkpoint"
    stream = TermAtSecondBatch(items(tokenizer, 8), 4, seed=0)
    with pytest.raises(Terminated) as stopped:
        run(tokenizer, make_model, ck, steps=4, every=0, stream=stream)
    assert stopped.value.step == 2 and checkpoint_step(ck) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone
    assert same_weights(run(tokenizer, make_model, ck), run(tokenizer, make_model, None))


def test_the_cli_reports_a_termination_on_one_line(monkeypatch, capsys):
    def stop(_args):
        raise Terminated(7)

    monkeypatch.setattr("dpkd_bench.cli.cmd_ls", stop)
    monkeypatch.setattr("dpkd_bench.cli.build_parser", _parser_with(stop))
    assert main(["ls"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: terminated (SIGTERM) after step 7, its checkpoint written; rerun with "
        "--resume --out DIR to continue"
    ]


def _parser_with(func):
    from dpkd_bench.cli import build_parser as real

    def build():
        parser = real()
        parser.set_defaults(func=func)
        return parser

    return build
