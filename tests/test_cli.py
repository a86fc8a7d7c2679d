"""The command line, end to end on a tiny recipe: train, eval, generate, info."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from seqkit.cli import main


def test_train_eval_generate_info(tiny_recipe):
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(tiny_recipe), "--set", "model.encoder=gru", "--output-dir", "runs/gru", "--quiet"])
    assert trained.exit_code == 0, trained.output + trained.stderr
    assert "best checkpoint: runs/gru/best" in trained.output
    assert "valid loss" in trained.output and "test loss" in trained.output

    evaluated = runner.invoke(main, ["eval", "runs/gru/best", "--data", "data/test.txt", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.output)
    assert metrics["perplexity"] > 1 and metrics["tokens"] > 100
    human = runner.invoke(main, ["eval", "runs/gru/best", "--data", "data/test.txt"])
    assert f"perplexity {metrics['perplexity']:.2f}" in human.output

    arguments = ["generate", "runs/gru/best", "--prompt", "the whale", "--max-tokens", "15", "--temperature", "0.8", "--top-k", "40", "--seed", "1"]
    first, second = runner.invoke(main, arguments), runner.invoke(main, arguments)
    assert first.exit_code == 0, first.stderr
    assert first.output == second.output and first.output.startswith("the whale")
    other_seed = runner.invoke(main, arguments[:-1] + ["2"])
    assert other_seed.output != first.output
    several = runner.invoke(main, [*arguments, "--num", "3"])
    assert len(several.output.strip().split("\n\n")) >= 3 or several.output.count("the whale") == 3

    info = runner.invoke(main, ["info", "runs/gru/best"])
    assert info.exit_code == 0, info.stderr
    assert "task         language_model" in info.output and "gru" in info.output and "parameters" in info.output


def test_user_errors_exit_2_without_traceback(tiny_recipe):
    runner = CliRunner()
    missing = runner.invoke(main, ["eval", "runs/none/best", "--data", "data/test.txt"])
    assert missing.exit_code == 2 and "runs/none/best: checkpoint directory not found" in missing.stderr
    trained = runner.invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=3", "--quiet"])
    assert trained.exit_code == 0
    again = runner.invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=3", "--quiet"])
    assert again.exit_code == 2 and "already holds a run" in again.stderr
    no_data = runner.invoke(main, ["eval", "runs/tiny/best", "--data", "data/nope.txt"])
    assert no_data.exit_code == 2 and "data/nope.txt: file not found" in no_data.stderr
    for result in (missing, again, no_data):
        assert "Traceback" not in result.output + result.stderr


def test_python_dash_m_seqkit_runs_the_same_cli():
    completed = subprocess.run([sys.executable, "-m", "seqkit", "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    for command in ("train", "eval", "generate", "info"):
        assert command in completed.stdout


def test_help_and_a_misspelt_command_answer_without_importing_torch():
    """``--help`` of any command, and a typo, are parsed before anything heavy is imported."""
    code = (
        "import sys\n"
        "from seqkit.cli import main\n"
        "for arguments in (['generate', '--help'], ['train', '--help'], ['generat']):\n"
        "    try:\n"
        "        main(arguments, prog_name='seqkit')\n"
        "    except SystemExit as done:\n"
        "        print(arguments[0], done.code)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "generate 0" in completed.stdout and "train 0" in completed.stdout and "generat 2" in completed.stdout, completed.stdout + completed.stderr
    assert "torch imported: False" in completed.stdout
    assert completed.stderr.strip() == "seqkit: error: No such command 'generat'. Did you mean 'generate'? (see seqkit --help)"


def test_usage_errors_are_one_line(tmp_path):
    runner = CliRunner()
    for arguments, message in (
        (["--bogus"], "seqkit: error: No such option '--bogus' (see seqkit --help)"),
        (["eval", "x"], "seqkit: error: Missing option '--data' (see seqkit eval --help)"),
        (["eval", "x", "--data", "y", "--threads", "0"], "seqkit: error: Invalid value for '--threads': 0 is not in the range 1<=x<=1024 (see seqkit eval --help)"),
    ):
        result = runner.invoke(main, arguments, prog_name="seqkit")
        assert result.exit_code == 2 and result.stderr.splitlines() == [message], result.stderr
    bare = runner.invoke(main, [], prog_name="seqkit")
    assert bare.exit_code == 0 and bare.output.startswith("Usage: seqkit")


def test_threads_auto_leaves_the_cores_other_processes_use(monkeypatch):
    import os

    import torch

    from seqkit.runtime import choose_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.5, 0.1))
        chosen = choose_threads("auto")
        assert (chosen.chosen, torch.get_num_threads()) == (3, 3)
        assert chosen.describe() == "threads: auto -> 3 (4 cores, 1 kept busy by other processes)"
        monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
        assert choose_threads("auto").chosen == 1  # never fewer than one
        assert choose_threads(2).describe() == "threads: 2 -> 2 (as asked)" and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert choose_threads("auto").reason == "set by OMP_NUM_THREADS"
    finally:
        torch.set_num_threads(before)


def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(tmp_path):
    """A Ctrl-C while PyTorch is still being imported (the first second of any command)
    ends like one later on: ``seqkit: interrupted``, exit 130 -- not click's ``Aborted!``.
    The Ctrl-C is simulated where it lands, at the import of torch, so the test is exact."""
    code = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from seqkit.cli import main\n"
        f"main(['info', {str(tmp_path / 'none')!r}], prog_name='seqkit')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 130, completed.stderr
    assert completed.stderr.strip() == "seqkit: interrupted", completed.stderr
