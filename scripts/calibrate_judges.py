"""Calibrate the identity judges on LFW and write their thresholds into models/manifest.json.

For each judge: verification accuracy on ``pairs.txt`` by the standard 10-fold protocol (the
accuracy-optimal threshold chosen on 9 folds, accuracy measured on the 10th; mean and std over
the folds), and two cosine thresholds calibrated on ``pairsDevTrain.txt`` (disjoint people):
the accuracy-optimal one on its 2,200 pairs, and the one at a false-accept rate of 1e-3 over
every different-person pair of its images; and the judge's mean cosine over its 1,100
same-person pairs (``same_person_mean``, with ``same_person_std``: what one person's two photos
score, the yardstick of the video metric ``stability_<judge>``, docs/metrics.md). Faces are
found with ``find_faces`` (MTCNN with a 60 px smallest face, the face nearest the image centre); where none is found the image is
embedded from a fixed centre box of the deep-funneled layout and counted as a detection failure.

Each distinct image is embedded once; embeddings are cached in ``.data/calibrate_judges/`` and a
rerun resumes from them. Images are embedded in an order that covers every fold and both classes
evenly, so that ``--partial`` can evaluate a balanced subset of the pairs while a run is under way.

    .venv/bin/python scripts/calibrate_judges.py            # 0.5 s an image on one free core
    .venv/bin/python scripts/calibrate_judges.py --partial  # figures from the cached subset
    .venv/bin/python scripts/calibrate_judges.py --dev-only # same_person_* only (3,443 images)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
#: Deep-funneled LFW: 250 x 250 with the face about 110 px in the centre.
CENTRE_BOX = np.array([70.0, 65.0, 180.0, 185.0])
#: Images per detection/embedding batch (and per cache save).
CHUNK = 32
#: MTCNN's smallest face: LFW's faces are about 110 px, so the pyramid can stop early.
MIN_FACE = 60


def nearest_centre(faces, shape):
    centre = np.array([shape[1], shape[0]]) / 2
    return min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))


def embed_images(paths, images_dir, judges, cache):
    """``{judge: {path: (D,) embedding}}`` and the set of detection failures, cached."""
    from fiftyone_faceanon.faces import face_from_box, find_faces_batch
    from fiftyone_faceanon.images import ImageError, load_image
    from fiftyone_faceanon.metrics.identity import FaceNetJudge, facenet_crops

    store = {name: {} for name in judges}
    failed: set[str] = set()
    if cache.is_file():
        data = np.load(cache)
        for name in judges:
            if f"{name}_paths" in data:
                store[name] = dict(zip(data[f"{name}_paths"].tolist(), data[name]))
        failed = set(data["failed"].tolist())
    todo = [p for p in paths if any(p not in store[n] for n in judges)]

    def save():
        arrays = {"failed": np.array(sorted(failed), dtype=str)}
        for name, emb in store.items():
            arrays[f"{name}_paths"] = np.array(list(emb), dtype=str)
            arrays[name] = np.array(list(emb.values()), np.float32)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cache)

    errors = 0
    progress = tqdm(total=len(todo), desc="embedding LFW images", unit="img")
    for start in range(0, len(todo), CHUNK):
        chunk, images = [], []
        for path in todo[start : start + CHUNK]:
            try:
                images.append(load_image(images_dir / path).rgb)
                chunk.append(path)
            except ImageError as e:
                print(e, file=sys.stderr)
                errors += 1
        found = find_faces_batch(images, min_face_size=MIN_FACE)
        faces = []
        for path, image, candidates in zip(chunk, images, found):
            if candidates:
                faces.append(nearest_centre(candidates, image.shape))
            else:
                failed.add(path)
                faces.append(face_from_box(image, CENTRE_BOX, 0.0))
        for name, judge in judges.items():
            if isinstance(judge, FaceNetJudge):  # one batch over the chunk's crops
                crops = np.concatenate([facenet_crops(im, [f]) for im, f in zip(images, faces)])
                embeddings = judge.embed_crops(crops)
            else:
                embeddings = [judge.embed(im, [f])[0] for im, f in zip(images, faces)]
            store[name].update(zip(chunk, embeddings))
        progress.update(len(todo[start : start + CHUNK]))
        save()
    progress.close()
    if errors:
        sys.exit(f"{errors} LFW image(s) could not be read")
    return store, failed


def interleaved(pair_lists):
    """All pairs ordered by their relative position within their list and class (matched /
    mismatched), so that any prefix covers every fold and both classes evenly."""
    keyed = []
    for pairs in pair_lists:
        for same in (True, False):
            members = [pair for pair in pairs if pair[2] == same]
            keyed += [(i / len(members), pair) for i, pair in enumerate(members)]
    return [pair for _, pair in sorted(keyed, key=lambda k: k[0])]


def similarities(pairs, emb):
    from fiftyone_faceanon.metrics.identity import cosine

    a = np.array([emb[p[0]] for p in pairs])
    b = np.array([emb[p[1]] for p in pairs])
    return cosine(a, b), np.array([p[2] for p in pairs])


def same_person(dev, emb) -> dict:
    """``same_person_mean`` and ``same_person_std`` of the cosines of the same-person pairs of
    ``dev`` (a pairs list) under embeddings ``emb``."""
    s, same = similarities(dev, emb)
    return {"same_person_mean": round(float(s[same].mean()), 5),
            "same_person_std": round(float(s[same].std()), 5),
            "same_person_pairs": int(same.sum())}


def dev_thresholds(dev, emb) -> dict:
    """The two thresholds calibrated on ``dev``: accuracy-optimal over its pairs, and FAR 1e-3
    over every different-person pair of its images; and how many such pairs there are."""
    from fiftyone_faceanon.metrics.identity import best_threshold, far_threshold

    dev_paths = sorted({p for pair in dev for p in pair[:2]})
    e = np.array([emb[p] for p in dev_paths])
    people = np.array([p.split("/")[0] for p in dev_paths])
    sim = e @ e.T
    upper = np.triu(np.ones(sim.shape, bool), 1)
    impostors = sim[upper & (people[:, None] != people[None, :])]
    return {"accuracy": best_threshold(*similarities(dev, emb)),
            "far_1e-3": far_threshold(impostors, 1e-3), "impostors": len(impostors)}


def write_manifest(entries: dict) -> None:
    """Merge ``entries`` into the manifest's top-level ``judges`` key (re-read just before)."""
    from fiftyone_faceanon.images import atomic_write
    from fiftyone_faceanon.weights import MANIFEST, manifest, models_dir

    data = manifest()
    data.setdefault("judges", {}).update(entries)
    atomic_write(models_dir() / MANIFEST, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--judges", nargs="+", default=["facenet_casia", "dlib"])
    parser.add_argument("--cache", type=Path, default=ROOT / ".data" / "calibrate_judges")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--partial", action="store_true",
                        help="embed nothing; evaluate on the pairs whose images are cached")
    parser.add_argument("--dev-only", action="store_true",
                        help="embed only pairsDevTrain's images and add same_person_mean/std to "
                             "the manifest's judge entries, leaving the rest of them as they are "
                             "(the thresholds recomputed from them are printed beside the "
                             "manifest's)")
    args = parser.parse_args()

    import cv2
    import torch

    from fiftyone_faceanon.metrics.identity import (
        best_threshold, judge_thresholds, lfw_pairs, load_judges, verification_accuracy)

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    judges, unavailable = load_judges(args.judges, device="cpu")
    for name, reason in unavailable.items():
        print(f"{name}: unavailable: {reason}", file=sys.stderr)
    folds = lfw_pairs(args.lfw / "pairs.txt")
    dev = lfw_pairs(args.lfw / "pairsDevTrain.txt")[0]
    paths = list(dict.fromkeys(p for pair in interleaved(folds + [dev]) for p in pair[:2]))
    if args.dev_only:
        paths = list(dict.fromkeys(p for pair in dev for p in pair[:2]))
    args.cache.mkdir(parents=True, exist_ok=True)
    store, failed = embed_images([] if args.partial else paths, args.lfw / "images_deepfunneled",
                                 judges, args.cache / "embeddings.npz")
    if args.partial:  # only the pairs whose two images are embedded by every judge
        done = set.intersection(*(set(store[n]) for n in judges))
        folds = [[pair for pair in pairs if pair[0] in done and pair[1] in done] for pairs in folds]
        dev = [pair for pair in dev if pair[0] in done and pair[1] in done]
        paths = [p for p in paths if p in done]
    if args.dev_only:
        from fiftyone_faceanon.weights import manifest

        current, calibrated = manifest().get("judges", {}), judge_thresholds()
        entries = {}
        for name in judges:
            entries[name] = {**current.get(name, {}), **same_person(dev, store[name])}
            print(name, json.dumps({k: v for k, v in entries[name].items()
                                    if k.startswith("same_person")}),
                  "thresholds recomputed", dev_thresholds(dev, store[name]),
                  "manifest", calibrated.get(name))
        write_manifest(entries)
        return
    test_paths = {p for pairs in folds for pair in pairs for p in pair[:2]}
    dev_paths = sorted({p for pair in dev for p in pair[:2]})
    entries = {}
    for name in judges:
        emb = store[name]
        fold_acc = []
        for k in range(len(folds)):
            train = [pair for j, pairs in enumerate(folds) if j != k for pair in pairs]
            t = best_threshold(*similarities(train, emb))
            fold_acc.append(verification_accuracy(*similarities(folds[k], emb), t))
        dev_t = dev_thresholds(dev, emb)
        t_acc, t_far = dev_t["accuracy"], dev_t["far_1e-3"]
        all_test = [pair for pairs in folds for pair in pairs]
        s_test, same_test = similarities(all_test, emb)
        entries[name] = {
            "thresholds": {"accuracy": round(t_acc, 6), "far_1e-3": round(t_far, 6)},
            **same_person(dev, emb),
            "similarity": "cosine of L2-normalised embeddings; same person when above",
            "lfw_accuracy_mean": round(float(np.mean(fold_acc)), 5),
            "lfw_accuracy_std": round(float(np.std(fold_acc)), 5),
            "lfw_fold_accuracies": [round(a, 5) for a in fold_acc],
            "lfw_pairs_accuracy_at_threshold": round(verification_accuracy(s_test, same_test, t_acc), 5),
            "lfw_pairs_tar_at_far_1e-3": round(float(np.mean(s_test[same_test] > t_far)), 5),
            "lfw_pairs_far_at_far_1e-3": round(float(np.mean(s_test[~same_test] > t_far)), 5),
            "calibration": f"pairsDevTrain.txt: {len(dev)} pairs (accuracy threshold); "
                           f"{dev_t['impostors']} different-person pairs of its {len(dev_paths)} images (FAR threshold)",
            "evaluation": f"pairs.txt, 10 folds ({sum(map(len, folds))} of 6000 pairs), "
                          "threshold chosen on the other 9 folds",
            "detection": "find_faces (MTCNN, threshold 0.9, min_face_size 60), face nearest the centre",
            "detection_failures": {"pairs.txt": len(failed & test_paths),
                                   "pairsDevTrain.txt": len(failed & set(dev_paths)),
                                   "images": len(paths)},
            "command": "python scripts/calibrate_judges.py " + " ".join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
        }
        print(name, json.dumps(entries[name], indent=1))
    write_manifest(entries)


if __name__ == "__main__":
    main()
