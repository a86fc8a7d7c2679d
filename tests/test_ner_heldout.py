"""The WNUT-16 held-out split (data/wnut16/carve.py) and the CRF decoding that scores it.

carve.py must give the shipped bytes on every run, and its two files must split
train.conll's tweets exactly: none in both, none lost, the order kept. The CRF must decode
with its current transitions after a fused optimizer step, which updates them in place
without bumping the tensors' version counters (training-time dev F1 picks best/).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import torch

from seqkit.crf import CRF

from helpers import WNUT


def _carve_module():
    spec = importlib.util.spec_from_file_location("carve", WNUT / "carve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_carve_is_deterministic_and_gives_the_shipped_bytes():
    carve = _carve_module()
    first, second = carve.carved_texts(WNUT / "train.conll"), carve.carved_texts(WNUT / "train.conll")
    assert first == second
    for name, text in first.items():
        assert (WNUT / name).read_bytes() == text.encode("utf-8"), name
    check = subprocess.run([sys.executable, str(WNUT / "carve.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_heldout_and_rest_partition_the_training_tweets():
    carve = _carve_module()
    train = carve.split_tweets((WNUT / "train.conll").read_text(encoding="utf-8"))
    held_out = carve.split_tweets((WNUT / "heldout.conll").read_text(encoding="utf-8"))
    rest = carve.split_tweets((WNUT / "train_minus_heldout.conll").read_text(encoding="utf-8"))
    assert (len(train), len(held_out), len(rest)) == (1916, 239, 1677)
    assert held_out == train[7::8]  # every 8th tweet: source index i % 10 == 7
    assert rest == [tweet for index, tweet in enumerate(train) if index % 8 != 7]
    assert sorted(held_out + rest) == sorted(train)  # the union is train.conll, each tweet once
    # disjoint by position; the source repeats some tweets word for word (53 repeats in
    # train.conll, 10 dev tweets are training tweets), and 15 held-out tweets have a copy
    # in the rest, as the unshipped test split drawn by the same rule will have too
    assert len(set(held_out) & set(rest)) == 15


def test_carve_check_names_a_file_that_differs(tmp_path):
    carve = _carve_module()
    assert carve.main(["--out-dir", str(tmp_path)]) == 0
    (tmp_path / "heldout.conll").write_text("x\tO\n\n", encoding="utf-8")
    assert carve.main(["--out-dir", str(tmp_path), "--check"]) == 1


def test_crf_decodes_with_the_transitions_a_fused_step_wrote():
    torch.manual_seed(0)
    crf = CRF(4)
    emissions, mask = torch.randn(3, 6, 4), torch.ones(3, 6, dtype=torch.bool)
    before = crf.decode(emissions, mask)  # fills the NumPy cache with zero transitions
    optimizer = torch.optim.Adam(crf.parameters(), lr=5.0, fused=True)
    tags = torch.randint(0, 4, (3, 6))
    crf(emissions, tags, mask).backward()
    optimizer.step()
    fresh = CRF(4)
    fresh.load_state_dict(crf.state_dict())
    assert crf.decode(emissions, mask) == fresh.decode(emissions, mask)
    assert fresh.decode(emissions, mask) != before  # the step changed the best paths


def test_crf_keeps_its_arrays_while_the_values_stay_and_drops_them_when_they_change():
    crf = CRF(4)
    arrays = crf._arrays(True)
    assert crf._arrays(True) is arrays  # kept: a service's every call would otherwise rebuild them
    with torch.no_grad():
        crf.transitions[1, 2] = 3.0  # in place, same memory
    assert crf._arrays(True) is not arrays and crf._arrays(True).scores[0][1, 2] == 3.0
    arrays = crf._arrays(True)
    crf.transitions.data = torch.zeros(4, 4)  # new memory, the same values as before but one
    assert crf._arrays(True) is not arrays and crf._arrays(True).scores[0][1, 2] == 0.0
