import numpy as np
import pytest

from e2v_common import contract
from expected import REAL_LABELS


def layer_by_layer_frames(n: int, spec) -> int:
    for _, kernel, stride in spec:
        n = (n - kernel) // stride + 1
    return n


def test_frame_formula_matches_the_conv_stack():
    spec = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    samples = np.arange(contract.FRAME_RECEPTIVE_FIELD, 16000 * 40, 7)
    expected = [layer_by_layer_frames(int(n), spec) for n in samples[::997]]
    assert list(contract.frames_for_samples(samples[::997])) == expected
    assert contract.frames_for_samples(16000) == 49
    assert contract.frames_for_samples(399) == 0
    assert contract.frames_for_samples(400) == 1


def test_labels_from_tokens(tmp_path):
    current = tmp_path / "tokens.txt"
    current.write_text(
        "生气/angry\n厌恶/disgusted\n恐惧/fearful\n开心/happy\n中立/neutral\n其他/other\n难过/sad\n吃惊/surprised\n<unk>"
    )
    tokens = contract.read_tokens(current)
    assert [contract.label_name(t) for t in tokens] == REAL_LABELS
    assert not any(contract.is_unused_label(t) for t in tokens)
    old = tmp_path / "old_tokens.txt"
    old.write_text("生气/angry\nunuse_0\nunuse_1\n开心/happy\n中立/neutral\nunuse_2\n难过/sad\nunuse_3\n<unk>\n")
    assert [contract.is_unused_label(t) for t in contract.read_tokens(old)] == [
        False,
        True,
        True,
        False,
        False,
        True,
        False,
        True,
        False,
    ]


def test_normalize_waveform_matches_torch_layer_norm_and_handles_silence():
    import torch

    x = np.random.default_rng(0).standard_normal(12345).astype(np.float32) * 0.2 + 0.05
    expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (x.size,)).numpy()
    assert np.abs(contract.normalize_waveform(x) - expected).max() < 1e-5
    silence = contract.normalize_waveform(np.zeros(16000, np.float32))
    assert np.all(silence == 0)


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(399, np.float32), "too short"),
        (np.array([0.0, np.nan] * 300, np.float32), "NaN"),
        (np.zeros((2, 800), np.float32), "mono"),
        (np.zeros(16000 * 3, np.float32), "too long"),
    ],
)
def test_check_waveform_rejects_what_the_model_cannot_score(samples, message):
    with pytest.raises(ValueError, match=message):
        contract.check_waveform(samples, max_seconds=2.0)


def test_length_groups_bound_the_padding():
    lengths = [16000, 480000, 17000, 90000, 100000, 16500, 110000]
    groups = contract.length_groups(lengths, max_ratio=1.25, max_size=8, max_steps=10**9)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert max(lengths[i] for i in group) <= 1.25 * min(lengths[i] for i in group)
    assert [sorted(g) for g in groups] == [[0, 2, 5], [3, 4, 6], [1]]
    assert all(len(g) <= 2 for g in contract.length_groups(lengths, max_ratio=10, max_size=2, max_steps=10**9))


def test_length_groups_bound_the_steps_of_a_run():
    """No group padded to its longest row holds more than max_steps; a row longer than that runs alone."""
    lengths = [100, 120, 110, 300, 290, 280, 700]
    groups = contract.length_groups(lengths, max_ratio=10, max_size=8, max_steps=600)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(g) for g in groups] == [[0, 1, 2], [4, 5], [3], [6]]
    for group in groups[:-1]:
        assert len(group) * max(lengths[i] for i in group) <= 600
