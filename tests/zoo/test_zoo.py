"""The shipped dit-digits model: determinism, save/load round trip, and the class-accuracy quality floor."""

from __future__ import annotations

import pytest
import torch

from accel.zoo import MODELS, load
from accel.errors import AccelError


def _sample(pipe, labels, steps=50, seed=0):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    return pipe(class_labels=labels, num_inference_steps=steps, generator=gens, output_type="pt").images


def test_same_seed_same_image(digits_pipe):
    a = _sample(digits_pipe, [3, 7], steps=10)
    b = _sample(digits_pipe, [3, 7], steps=10)
    assert torch.equal(a, b)
    assert not torch.equal(a, _sample(digits_pipe, [3, 7], steps=10, seed=5))


def test_save_load_round_trip(digits_pipe, tmp_path):
    digits_pipe.save_pretrained(tmp_path / "copy")
    copy = load(str(tmp_path / "copy"))
    copy.set_progress_bar_config(disable=True)
    assert type(copy) is type(digits_pipe)
    assert torch.equal(_sample(copy, [1, 2], steps=8), _sample(digits_pipe, [1, 2], steps=8))


def test_any_diffusers_scheduler_works(digits_pipe):
    from diffusers import DPMSolverMultistepScheduler

    sched = digits_pipe.scheduler
    digits_pipe.scheduler = DPMSolverMultistepScheduler.from_config(sched.config)
    try:
        out = _sample(digits_pipe, [0, 5], steps=15)
    finally:
        digits_pipe.scheduler = sched
    assert torch.isfinite(out).all() and out.shape == (2, 1, 16, 16)


def test_quality_floor_class_accuracy(digits_pipe):
    """100 class-conditional samples at 50 steps: a digit classifier recognises the requested class >= 80%."""
    from accel.zoo.digits import DigitClassifier

    labels = [i % 10 for i in range(100)]
    images = _sample(digits_pipe, labels, steps=50, seed=1234)
    acc = DigitClassifier().accuracy(images, labels)
    print(f"dit-digits class accuracy on 100 samples at 50 steps: {acc:.3f}")
    assert acc >= 0.80


def test_classifier_is_a_real_judge():
    from accel.zoo.digits import DigitClassifier, digits_dataset

    x, y = digits_dataset(16)
    clf = DigitClassifier()
    assert clf.accuracy(x[:300], y[:300]) > 0.95
    assert clf.accuracy(torch.randn(100, 1, 16, 16).clamp(-1, 1), y[:100]) < 0.5


def test_unknown_model_lists_known_ones():
    with pytest.raises(AccelError, match="dit-digits"):
        load("no-such-model")
    assert "dit-digits" in MODELS


def test_training_resumes_exactly(tmp_path, caplog):
    """An interrupted `accel zoo train dit-digits` run continues bit-identically from its checkpoint, and says so."""
    from accel.zoo.dit_digits.recipe import TrainConfig, train

    caplog.set_level("INFO", logger="accel")

    cfg = TrainConfig(steps=4, batch_size=4, warmup=2, checkpoint_every=2)
    full = train(tmp_path / "full", cfg, work_dir=tmp_path / "w_full")
    half_cfg_run = tmp_path / "w_half"
    import accel.zoo.dit_digits.recipe as dd

    calls = []

    def interrupt_at_three(step, total, loss):  # step 2's checkpoint is on disk, step 3 is lost
        calls.append(step)
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "half", cfg, work_dir=half_cfg_run, progress=interrupt_at_three)
    resumed_from = []
    resumed = train(tmp_path / "half", cfg, work_dir=half_cfg_run, progress=lambda s, n, l: resumed_from.append(s))
    assert calls == [1, 2, 3] and resumed_from == [3, 4]
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("accel")]
    assert notes == [f"resuming from step 2 of 4 ({half_cfg_run / 'checkpoint.safetensors'})"]
    a = dd.build_pipeline().from_pretrained(full).transformer.state_dict()
    b = dd.build_pipeline().from_pretrained(resumed).transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(AccelError, match="another config"):
        train(tmp_path / "half", TrainConfig(steps=6, batch_size=4, warmup=2, checkpoint_every=2), work_dir=half_cfg_run)
