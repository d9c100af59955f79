"""dp68: data preparation, training (few steps on CPU), checkpoint round trip, the backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fiftyone_faceanon.anonymizers import create_backend
from fiftyone_faceanon.gan.data import prepare
from fiftyone_faceanon.gan.nets import Discriminator, Generator, NetConfig
from fiftyone_faceanon.gan.shards import (
    LANDMARK_CHANNELS,
    conditioning,
    flip_landmarks,
    landmark_image,
    load_faces,
    read_index,
)
from fiftyone_faceanon.gan.train import (
    CHECKPOINT,
    PORTABLE,
    PRESETS,
    Trainer,
    draw_batch,
    export,
    keep_state,
    load_checkpoint,
    save_atomic,
    train,
)

SIZE = 64


@pytest.fixture(scope="module")
def shards(fixtures_dir, tmp_path_factory):
    """Shards prepared by the real prepare-data code from 8 fixture photos and a broken file."""
    tmp = tmp_path_factory.mktemp("gan")
    broken = tmp / "broken.jpg"
    broken.write_bytes(b"")
    files = sorted((fixtures_dir / "ffhq10").glob("*.png"))[:6] + sorted(
        (fixtures_dir / "dlib_johns/John_Salley").glob("*.jpg"))[:2] + [broken]
    events = []
    index = prepare(files, fixtures_dir, tmp / "shards", SIZE, shard_size=4, device="cpu",
                    split="test fixtures", on_file=lambda *e: events.append(e))
    return tmp / "shards", index, events


def test_prepare_data_writes_shards(shards):
    folder, index, events = shards
    assert index == read_index(folder)
    assert index["photos"] == 9 and index["faces"] >= 7 and index["dropped"]["error"] == 1
    assert index["faces"] + sum(index["dropped"].values()) == 9
    assert [s["faces"] for s in index["shards"]][0] == 4
    error = [e for e in events if e[1] == "error"]
    assert len(error) == 1 and "broken.jpg: empty file" in error[0][2] and "\n" not in error[0][2]
    crops, lms = load_faces(folder)
    assert crops.shape == (index["faces"], SIZE, SIZE, 3) and crops.dtype == np.uint8
    assert lms.shape == (index["faces"], 68, 2)
    # the face sits inside the context crop (context 2x the landmarks' extent)
    assert lms.min() > 0 and lms.max() < SIZE
    # resizing on load scales the landmarks with the pixels
    big, big_lms = load_faces(folder, size=128, limit=2)
    assert big.shape == (2, 128, 128, 3)
    np.testing.assert_allclose(big_lms, (lms[:2] + 0.5) * 2 - 0.5, rtol=1e-6)


def test_conditioning_and_flip(shards):
    crops, lms = load_faces(shards[0], limit=2)
    x, m, l = conditioning(crops, lms, np.array([False, True]))
    assert x.shape == (2, 3, SIZE, SIZE) and m.shape == (2, 1, SIZE, SIZE)
    assert l.shape == (2, LANDMARK_CHANNELS, SIZE, SIZE)
    assert -1 <= x.min() and x.max() <= 1 and set(np.unique(m)) == {0.0, 1.0}
    # flipping twice is the identity; a flipped face's landmark image is the mirror image with
    # left and right parts swapped
    twice = flip_landmarks(flip_landmarks(lms[1], SIZE), SIZE)
    np.testing.assert_allclose(twice, lms[1], atol=1e-4)
    np.testing.assert_allclose(x[1], crops[1][:, ::-1].transpose(2, 0, 1) / 127.5 - 1)
    plain = landmark_image(lms[1], SIZE) / 255.0
    swapped = plain[[0, 2, 1, 3, 4, 6, 5, 7, 8]][:, :, ::-1]
    assert np.abs(l[1] - swapped).mean() < 0.02


def test_nets_shapes():
    cfg = NetConfig(64, 8, 32, 16)
    G, D = Generator(cfg), Discriminator(cfg)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    m = torch.zeros(2, 1, 64, 64)
    m[:, :, 16:48, 16:48] = 1
    y = G(x, m, torch.rand(2, LANDMARK_CHANNELS, 64, 64), torch.randn(2, 16))
    assert y.shape == x.shape and D(y, m, torch.rand(2, 9, 64, 64)).shape == (2,)
    # outside the face region the context is returned unchanged
    assert torch.equal(y[m.expand_as(y) == 0], x[m.expand_as(x) == 0])


def states_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_train_resume_export_backend(shards, tmp_path):
    torch.set_num_threads(1)
    folder = shards[0]
    # 4 steps in one go
    out = train(folder, tmp_path / "a", "tiny", steps=4, device="cpu")
    assert out["step"] == 4
    log = [json.loads(line) for line in (tmp_path / "a/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for record in log:
        for key in ("loss_d", "loss_g", "adv", "l1", "diversity"):
            assert np.isfinite(record[key]), (key, record)
    assert "r1" in log[0] and np.isfinite(log[0]["r1"])
    assert (tmp_path / "a/samples/step-0000004.png").is_file()
    # 2 steps, stop, resume to 4: the same state as the uninterrupted run
    train(folder, tmp_path / "b", "tiny", steps=2, device="cpu")
    train(folder, tmp_path / "b", "tiny", steps=4, device="cpu")
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT, torch.device("cpu"))
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT, torch.device("cpu"))
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "step", "config"):
        assert states_equal(a[key], b[key]), key
    # a checkpoint loads back into a trainer bit for bit
    trainer = Trainer(PRESETS["tiny"], torch.device("cpu"))
    trainer.load(a)
    again = trainer.state()
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "step"):
        assert states_equal(a[key], again[key]), key

    # the portable state (bfloat16 EMA G + D) alone continues a run on another machine
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / PORTABLE).rename(tmp_path / "c" / PORTABLE)
    assert train(folder, tmp_path / "c", "tiny", steps=5, device="cpu")["step"] == 5

    path, meta = export(tmp_path / "a" / CHECKPOINT, tmp_path)
    assert path.name == "dp68_64.pt" and meta["training_steps"] == 4 and meta["resolution"] == 64
    backend = create_backend("dp68", weights=path, device="cpu")
    assert backend.photometric and backend.crop_size == 64
    crops, lms = load_faces(folder, limit=3)
    regions = conditioning(crops, lms)[1][:, 0]

    def run(seeds):
        return backend.anonymize(crops, lms, regions, [np.random.default_rng(s) for s in seeds])

    first = run([0, 1, 2])
    assert first.shape == (3, SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, run([0, 1, 2]))
    other = run([5, 6, 7])
    inside = regions.astype(bool)
    for i in range(3):
        assert np.abs(first[i][inside[i]].astype(int) - other[i][inside[i]]).mean() > 0.5
        # the context outside the face comes back (up to rounding)
        assert np.abs(first[i][~inside[i]].astype(int) - crops[i][~inside[i]]).max() <= 1
    # a 128 px crop is resized to the generator's 64 px and back
    big, big_lms = load_faces(folder, size=128, limit=1)
    resized = backend.anonymize(big, big_lms, None, [np.random.default_rng(0)])
    assert resized.shape == (1, 128, 128, 3)


def test_a_file_over_the_limit_is_not_written_and_the_old_one_stays(tmp_path):
    """What ``export`` and ``keep_state`` write into models/ is refused over the limit before
    it replaces anything: a shipped generator is not lost to a too large export."""
    path = tmp_path / "dp68_64.pt"
    save_atomic({"w": torch.zeros(4)}, path)
    old = path.read_bytes()
    with pytest.raises(ValueError, match="limit of models/"):
        save_atomic({"w": torch.zeros(4096)}, path, limit=len(old) + 1024)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_kept_state_continues_the_run_in_a_new_run_folder(shards, tmp_path):
    """A run's portable state kept in a models folder (as ``faceanon keep-dp68-state`` keeps it
    for the next GPU session) starts a new run folder where the run left off, with the weights
    a run folder holding that portable.pt continues from."""
    torch.set_num_threads(1)
    folder = shards[0]
    train(folder, tmp_path / "run", "tiny", steps=3, device="cpu")
    with pytest.raises(ValueError, match="a full checkpoint"):
        keep_state(tmp_path / "run" / CHECKPOINT, tmp_path / "models")
    kept, meta = keep_state(tmp_path / "run" / PORTABLE, tmp_path / "models")
    assert kept == tmp_path / "models/training/dp68_64_state.pt"
    assert (meta["training_steps"], meta["resolution"]) == (3, 64)
    assert meta["config"]["net"] == PRESETS["tiny"].as_dict()["net"]

    # the next session: a new run folder, started from the kept state
    out = train(folder, tmp_path / "next", "base", steps=5, device="cpu", start=kept)
    assert out["step"] == 5
    config = json.loads((tmp_path / "next/config.json").read_text())
    assert config["net"] == PRESETS["tiny"].as_dict()["net"]  # the state's config, not "base"
    # the same weights as continuing a run folder that holds the portable state
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / PORTABLE).write_bytes((tmp_path / "run" / PORTABLE).read_bytes())
    train(folder, tmp_path / "same", "tiny", steps=5, device="cpu")
    a, b = (load_checkpoint(tmp_path / r / CHECKPOINT, torch.device("cpu"))
            for r in ("next", "same"))
    for key in ("G", "D", "G_ema", "step"):
        assert states_equal(a[key], b[key]), key
    # a run folder's own state comes first: a later start is not taken
    assert train(folder, tmp_path / "next", "tiny", steps=6, device="cpu",
                 start=kept)["step"] == 6


def test_channels_last_trains_the_same_numbers(shards):
    """The (N, H, W, C) layout is a memory layout only: the same losses from the same start (up
    to float rounding), weights that stay in it, and a state that loads into either layout."""
    torch.set_num_threads(1)
    cfg = PRESETS["tiny"]
    crops, lms = load_faces(shards[0])
    trainers = [Trainer(cfg, torch.device("cpu"), channels_last=last) for last in (False, True)]
    for t in range(2):
        batch = draw_batch(cfg, 0, t, crops, lms)
        plain, last = (trainer.step(batch) for trainer in trainers)
        assert plain.keys() == last.keys()
        for key in plain:
            np.testing.assert_allclose(float(last[key]), float(plain[key]), rtol=1e-3,
                                       atol=1e-5, err_msg=key)
    weights = [p for p in trainers[1].G.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    plain = Trainer(cfg, torch.device("cpu"))
    plain.load(trainers[1].state())
    for a, b in zip(plain.G_ema.parameters(), trainers[1].G_ema.parameters()):
        assert torch.equal(a, b) and a.is_contiguous()


def test_training_path_needs_only_torch_numpy_opencv():
    """The GPU machine has a stock PyTorch install: the training modules must not pull in the
    detector stack, FiftyOne or Pillow."""
    import subprocess
    import sys

    code = ("import sys, fiftyone_faceanon.gan.train; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dlib', 'fiftyone', 'facenet_pytorch', 'PIL', 'click', 'scipy', 'colour'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
