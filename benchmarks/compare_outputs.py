"""Outputs of this checkout against another's, with the same weights on the same images.

Each checkout runs in its own process (its own ``mask2former`` package): it builds the model of
``--config-file``, loads ``--weights``, and runs the first ``--images`` images of the config's
first test dataset through the test-time resize (``INPUT.MIN_SIZE_TEST``), with outputs at the
images' own size. The script then prints how far the outputs are apart: the largest difference
of the semantic probabilities, the fraction of panoptic pixels that differ, whether the
segments agree, the largest difference of the instance scores and the number of instance mask
pixels that differ.

    .venv/bin/python benchmarks/compare_outputs.py --baseline /tmp/other-checkout \\
        --config-file configs/synthetic/panoptic.yaml \\
        --weights output/quickstart_panoptic/model_final.pth --images 20 INPUT.MIN_SIZE_TEST 200
"""
import argparse
import json
import os
import tempfile
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_checkout(spec: Dict) -> None:
    """Worker: ``spec["repo"]``'s model on the images; saves the outputs to ``spec["out"]``."""
    from common import checkout_config  # this checkout's benchmarks/ (the script's directory)

    cfg = checkout_config(spec, spec["config"], spec["opts"])
    import torch

    import detectron2.data.transforms as T
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(spec["weights"])
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    outputs = []
    with torch.no_grad():
        for record in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: spec["images"]]:
            image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
            height, width = image.shape[:2]
            resized = resize.get_transform(image).apply_image(image)
            x = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            result = model([{"image": x, "height": height, "width": width}])[0]
            out = {}
            if "sem_seg" in result:
                out["sem_seg"] = result["sem_seg"].cpu()
            if "panoptic_seg" in result:
                out["panoptic"] = result["panoptic_seg"][0].cpu()
                out["segments"] = result["panoptic_seg"][1]
            if "instances" in result:
                inst = result["instances"].to("cpu")
                out["scores"], out["classes"] = inst.scores, inst.pred_classes
                out["masks"] = inst.pred_masks.bool()
            outputs.append(out)
    torch.save(outputs, spec["out"])


def _by_score(o: Dict) -> List[int]:
    """Instance order independent of the checkout: by score, then class."""
    return sorted(range(len(o["scores"])), key=lambda i: (-float(o["scores"][i]), int(o["classes"][i])))


def compare(a: List[Dict], b: List[Dict]) -> Dict[str, object]:
    """How far two checkouts' outputs of the same images are apart."""
    res: Dict[str, object] = {"images": len(a)}
    if "sem_seg" in a[0]:
        res["sem_seg max |diff|"] = max(float((x["sem_seg"] - y["sem_seg"]).abs().max()) for x, y in zip(a, b))
    if "panoptic" in a[0]:
        res["panoptic pixels differing (max fraction)"] = max(
            float((x["panoptic"] != y["panoptic"]).float().mean()) for x, y in zip(a, b)
        )
        res["images with equal segments_info"] = sum(x["segments"] == y["segments"] for x, y in zip(a, b))
    if "scores" in a[0]:
        score_diff, mask_pixels, count, same_classes = 0.0, 0, 0, True
        for x, y in zip(a, b):
            ox, oy = _by_score(x), _by_score(y)
            same_classes &= [int(x["classes"][i]) for i in ox] == [int(y["classes"][j]) for j in oy]
            for i, j in zip(ox, oy):
                score_diff = max(score_diff, float((x["scores"][i] - y["scores"][j]).abs()))
                mask_pixels += int((x["masks"][i] != y["masks"][j]).sum())
            count += len(ox)
        res.update({
            "instances": count, "same classes in score order": same_classes,
            "instance score max |diff|": score_diff, "instance mask pixels differing": mask_pixels,
        })
    return res


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="path of the other checkout (required)")
    parser.add_argument("--config-file", help="config path inside each checkout (required)")
    parser.add_argument("--weights", help="checkpoint both load (required)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for both")
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        run_checkout(spec)
        print(json.dumps({"saved": spec["out"]}))
        return
    missing = [f"--{k.replace('_', '-')}" for k in ("baseline", "config_file", "weights") if not getattr(args, k)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    import torch

    from common import run_worker

    outputs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, repo in (("this", REPO), ("baseline", args.baseline)):
            spec = {"repo": os.path.abspath(repo), "config": args.config_file,
                    "weights": os.path.abspath(args.weights), "images": args.images,
                    "device": args.device, "threads": args.threads, "opts": args.opts,
                    "out": os.path.join(tmp, f"{name}.pt")}
            run_worker(__file__, spec, cwd=repo)
            outputs.append(torch.load(spec["out"]))
    for key, value in compare(*outputs).items():
        print(f"{key}: {value:.2e}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
