"""Encoder-decoder seq2seq: grapheme-to-phoneme on CMUdict slices."""

import json
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import seqkit
from helpers import CMUDICT, ROOT, run_python, short_pairs, write_seq2seq_recipe
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.data import read_examples
from seqkit.decoder import Attention
from seqkit.errors import DataError
from seqkit.metrics import edit_distance, group_references, sequence_error_rates
from seqkit.tasks import Seq2SeqTask


def _pairs(text):
    return [line.split("\t") for line in text.splitlines()]


def test_seq2seq_overfits_a_small_real_slice_exactly(trained_seq2seq):
    assert trained_seq2seq.best_metrics["wer"] == 0.0 and trained_seq2seq.best_metrics["per"] == 0.0
    g2p = seqkit.Seq2Seq.from_pretrained(trained_seq2seq.run_dir / "best", device="cpu")
    pairs = _pairs(short_pairs(40))
    words = [word for word, _ in pairs]
    expected = [phonemes.split() for _, phonemes in pairs]
    assert g2p.predict(words) == expected  # batched, greedy, input order kept
    assert g2p.predict(words, beam=4, batch_size=7) == expected
    assert g2p.predict(words[3].lower()) == expected[3]  # the source tokenizer lowercases
    assert (trained_seq2seq.run_dir / "best" / "target_tokenizer.json").is_file()


def test_batched_beam_equals_one_by_one_on_a_real_model(trained_seq2seq):
    g2p = seqkit.Seq2Seq.from_pretrained(trained_seq2seq.run_dir / "best", device="cpu")
    words = ["seqkit", "tokenizer", "rnn", "a", "zebra"]  # not in training: the beams differ
    together = g2p.predict(words, beam=3)
    assert together == [g2p.predict(word, beam=3) for word in words]
    assert g2p.predict(words, beam=1) == g2p.predict(words)  # beam 1 is greedy


def test_round_trip_in_a_fresh_process(trained_seq2seq):
    best = trained_seq2seq.run_dir / "best"
    here = seqkit.Seq2Seq.from_pretrained(best, device="cpu").predict(["seqkit", "abbe"], beam=5)
    code = f"import json, seqkit; print(json.dumps(seqkit.load({str(best)!r}, device='cpu').predict(['seqkit', 'abbe'], beam=5)))"
    assert json.loads(run_python(code, best)) == here


def test_cli_predict_eval_and_info(trained_seq2seq):
    best = str(trained_seq2seq.run_dir / "best")
    runner = CliRunner()
    word, phonemes = _pairs(short_pairs(40))[0]
    result = runner.invoke(main, ["predict", best, "-", "--beam", "3"], input=f"{word}\n")
    assert result.exit_code == 0, result.output
    assert result.output == f"{word}\t{phonemes}\n"
    result = runner.invoke(main, ["predict", best, "-", "--format", "jsonl"], input=f"{word}\n")
    assert json.loads(result.output) == {"text": word, "output": phonemes.strip().split()}
    data = trained_seq2seq.run_dir.parent.parent / "pairs.tsv"
    result = runner.invoke(main, ["eval", best, "--data", str(data), "--beam", "2"])
    assert result.exit_code == 0 and "beam 2 decoding" in result.output and "(WER) 0.00%" in result.output
    assert "luong attention" in runner.invoke(main, ["info", best]).output


def test_attention_is_masked_at_padding_and_sums_to_one():
    torch.manual_seed(0)
    memory = torch.randn(3, 6, 10)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 2, 4])[:, None]
    for kind in ("luong", "bahdanau"):
        attention = Attention(kind, 8, 10)
        context, weights = attention(torch.randn(3, 8), memory, attention.keys(memory), mask)
        assert context.shape == (3, 10)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3))
        assert (weights[~mask] == 0).all()
        garbage = memory.masked_fill(~mask.unsqueeze(-1), 99.0)
        torch.testing.assert_close(attention(torch.zeros(3, 8), garbage, attention.keys(garbage), mask)[1],
                                   attention(torch.zeros(3, 8), memory, attention.keys(memory), mask)[1])  # fmt: skip


def test_teacher_forcing_schedule_and_loss_falls(tmp_path):
    recipe = load_recipe(write_seq2seq_recipe(tmp_path, short_pairs(20), teacher_forcing=1.0, teacher_forcing_end=0.5, epochs=3))
    task = Seq2SeqTask(recipe, Seq2SeqTask.make_tokenizer(recipe))
    ratios = []
    for epoch in range(3):
        task.train_batches(epoch, torch.device("cpu"))
        ratios.append(task.teacher_forcing)
    assert ratios == [1.0, 0.75, 0.5]


def test_error_rates():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], ["a"]) == 1
    scores = sequence_error_rates([[["K", "AE1", "T"]], [["D", "AO1", "G"]]], [["K", "AE1", "T"], ["D", "AA1", "G", "Z"]])
    assert scores == {"per": 2 / 6, "wer": 0.5, "sequences": 2}


def test_alternative_references_count_as_right_and_errors_go_against_the_closest():
    sources, references = group_references(["ROUTE", "CAT", "ROUTE"], [["R", "UW1", "T"], ["K", "AE1", "T"], ["R", "AW1", "T"]])
    assert sources == ["ROUTE", "CAT"] and references == [[["R", "UW1", "T"], ["R", "AW1", "T"]], [["K", "AE1", "T"]]]
    assert sequence_error_rates(references, [["R", "AW1", "T"], ["K", "AE1", "T"]]) == {"per": 0.0, "wer": 0.0, "sequences": 2}
    # "R AW1 T S": one insertion against the closest reference (3 tokens), not two errors
    scores = sequence_error_rates(references, [["R", "AW1", "T", "S"], ["K", "AE1", "T"]])
    assert scores == {"per": 1 / 6, "wer": 0.5, "sequences": 2}


def test_pair_files_name_file_and_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("CAT\tK AE1 T\nDOG D AO1 G\n")
    with pytest.raises(DataError, match=r"pairs.tsv:2: expected SOURCE<TAB>TARGET, both non-empty; found 1 field"):
        read_examples(path, targets="text")
    path.write_text("CAT\tK AE1 T\nDOG\t\n")
    with pytest.raises(DataError, match=r"pairs.tsv:2: expected SOURCE<TAB>TARGET"):
        read_examples(path, targets="text")
    examples = read_examples(CMUDICT / "dev.tsv.gz", targets="text")
    assert len(examples) == 6146 and examples.targets[0].split()[0].isupper()


def test_g2p_eval_benchmark_scores_with_and_without_stress(trained_seq2seq, tmp_path):
    """benchmarks/g2p_eval.py on the overfitted model: its own words are right both ways; a
    reference that differs only in a stress digit is wrong with stress and right without."""
    pairs = (trained_seq2seq.run_dir.parent.parent / "pairs.tsv").read_text(encoding="utf-8").splitlines()
    word, phonemes = pairs[0].split("\t")
    restressed = re.sub(r"\d", lambda digit: "2" if digit.group() != "2" else "1", phonemes, count=1)
    data = tmp_path / "restressed.tsv"
    data.write_text(f"{word}\t{restressed}\n" + "\n".join(pairs[1:]) + "\n", encoding="utf-8")
    command = [sys.executable, str(ROOT / "benchmarks" / "g2p_eval.py"), str(trained_seq2seq.run_dir / "best"), "--data", str(data), "--beam", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = f"with stress PER {1 / sum(len(p.split(chr(9))[1].split()) for p in pairs):.2%} WER {1 / len(pairs):.2%}; stress ignored PER 0.00% WER 0.00%"
    assert expected in done.stdout
    done = subprocess.run(command[:3] + command[2:], capture_output=True, text=True, timeout=120)  # the model twice: an ensemble
    assert done.returncode == 0, done.stderr
    assert "an ensemble of 2" in done.stdout and expected in done.stdout


@pytest.mark.parametrize("cell, attention", [("lstm", "luong"), ("gru", "bahdanau")])
def test_without_input_feeding_all_steps_at_once_equal_the_step_loop(cell, attention):
    from seqkit.decoder import AttentionDecoder
    from seqkit.encoders import RNNEncoder, TokenEmbedding
    from seqkit.model import Seq2SeqModel

    torch.manual_seed(0)
    encoder = RNNEncoder(input_size=8, hidden_size=12, num_layers=2, cell=cell, bidirectional=True)
    decoder = AttentionDecoder(15, 8, 12, 2, cell, encoder.output_dim, attention, dropout=0.0, pad_id=0, input_feeding=False)
    model = Seq2SeqModel(TokenEmbedding(20, 8, padding_idx=0), encoder, decoder).eval()
    lengths = torch.tensor([7, 3, 5])
    sources = torch.randint(1, 20, (3, 7)).masked_fill(torch.arange(7) >= lengths[:, None], 0)
    target_lengths = torch.tensor([4, 6, 2])
    targets = torch.randint(1, 15, (3, 6)).masked_fill(torch.arange(6) >= target_lengths[:, None], 0)
    at_once = model(sources, lengths, targets)  # teacher forcing 1.0: one RNN call
    state, looped = model.encode(sources, lengths), []
    for position in range(targets.shape[1]):
        logits, state, _ = decoder.step(targets[:, position], state)
        looped.append(logits)
    looped = torch.stack(looped, dim=1)
    real = torch.arange(6) < target_lengths[:, None]
    torch.testing.assert_close(at_once[real], looped[real], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="input feeding"):
        AttentionDecoder(15, 8, 12, 1, cell, encoder.output_dim, attention).teacher_forced(targets, model.encode(sources, lengths))


def test_a_model_without_input_feeding_trains_saves_and_loads(tmp_path):
    from seqkit.train import train

    recipe = load_recipe(write_seq2seq_recipe(tmp_path, short_pairs(40)), overrides=["model.input_feeding=false"])
    result = train(recipe, quiet=True)
    assert result.best_metrics["wer"] == 0.0
    g2p = seqkit.Seq2Seq.from_pretrained(result.run_dir / "best", device="cpu")
    assert g2p.model.decoder.input_feeding is False
    pairs = _pairs(short_pairs(40))
    assert g2p.predict([word for word, _ in pairs], beam=3) == [phonemes.split() for _, phonemes in pairs]


def test_an_ensemble_decodes_with_the_mean_of_its_members_distributions(trained_seq2seq, tmp_path):
    import shutil

    from seqkit.decoder import AttentionDecoder
    from seqkit.encoders import RNNEncoder, TokenEmbedding
    from seqkit.errors import SeqkitError
    from seqkit.model import Seq2SeqEnsemble, Seq2SeqModel

    torch.manual_seed(0)

    def member(cell):
        encoder = RNNEncoder(input_size=8, hidden_size=12, num_layers=1, cell=cell, bidirectional=True)
        return Seq2SeqModel(TokenEmbedding(20, 8), encoder, AttentionDecoder(15, 8, 12, 1, cell, encoder.output_dim)).eval()

    a, b = member("lstm"), member("gru")
    sources, lengths, tokens = torch.randint(1, 20, (3, 5)), torch.tensor([5, 2, 4]), torch.randint(1, 15, (3,))
    mixed, state, _ = Seq2SeqEnsemble([a, b]).decoder.step(tokens, Seq2SeqEnsemble([a, b]).encode(sources, lengths))
    expected = (a.decoder.step(tokens, a.encode(sources, lengths))[0].softmax(-1) + b.decoder.step(tokens, b.encode(sources, lengths))[0].softmax(-1)) / 2
    torch.testing.assert_close(mixed.exp(), expected)
    assert len(state.select(torch.tensor([2, 0])).members[1].mask) == 2

    best = trained_seq2seq.run_dir / "best"
    alone = seqkit.Seq2Seq.from_pretrained(best, device="cpu")
    twice = seqkit.Seq2Seq.ensemble([best, best], device="cpu")  # the mean of one distribution is itself
    words = [word for word, _ in _pairs(short_pairs(40))]
    assert twice.predict(words) == alone.predict(words) and twice.predict(words, beam=3) == alone.predict(words, beam=3)
    assert twice.evaluate(trained_seq2seq.run_dir.parent.parent / "pairs.tsv")["wer"] == 0.0
    with pytest.raises(SeqkitError, match="ensemble"):
        twice.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="two or more"):
        seqkit.Seq2Seq.ensemble([best])
    other = tmp_path / "other"
    shutil.copytree(best, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["normalizer"] = None  # the letters no longer lowercased: the same ids would mean other input
    (other / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(ValueError, match="source tokenizer differs"):
        seqkit.Seq2Seq.ensemble([best, other], device="cpu")
