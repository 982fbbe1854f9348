"""Evaluate a ``geolesf-wsod/1`` checkpoint on VOC (mAP 11-point and area, CorLoc) or COCO (AP).

``geolesf evaluate --checkpoint run/ndi.pt --dataset voc2007`` → per-class AP, mAP in both the
VOC2007 11-point form and the all-point (area) form, and CorLoc (top box per positive class,
before NMS, as PCL's ``box_results_for_corloc``). ``--dataset coco2017`` → AP, AP50, AP75, APs/m/l
from pycocotools. Detections per image follow the official test path: scores and boxes averaged
over the test scales (+ flip), per-class NMS (0.4), at most 100 detections per image.

``--option`` keys: ``split`` (VOC list; default ``test``, or every annotation when the list is
absent), ``limit`` (first N images), ``scales`` (e.g. ``[480]``), ``flip``, ``nms``,
``score_threshold`` (default 1e-5, Detectron's ``TEST.SCORE_THRESH``), ``max_per_image`` (100), ``proposals`` (file or
``selective_search``), ``annotations`` / ``images`` (COCO files), ``iou_rule`` (VOC mAP and CorLoc:
``gt`` = IoU > 0.5, the default, as the NDI-WSOD official ``voc_eval.py`` / ``dis_eval.py``
(py-faster-rcnn port); ``ge`` = IoU ≥ 0.5, the VOC MATLAB devkit; see :mod:`geolesf.metrics.detection`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from geolesf.errors import ConfigError, DataError

from geolesf.methods.wsod.checkpoint import load as load_wsod_checkpoint

KNOWN = {"split", "limit", "scales", "flip", "nms", "score_threshold", "max_per_image", "proposals",
         "annotations", "images", "proposal_max_side", "max_proposals", "iou_rule"}


def postprocess(scores: np.ndarray, boxes: np.ndarray, nms: float = 0.4, score_threshold: float = 1e-5,
                max_per_image: int = 100) -> Any:
    """Per-class NMS on ``(R, C+1)`` scores / ``(R, 4(C+1))`` boxes → :class:`Detections` (0-based classes)."""
    import torch
    from torchvision.ops import batched_nms

    from geolesf.metrics.detection import Detections

    r, c1 = scores.shape
    b = boxes.reshape(r, c1, 4)[:, 1:].reshape(-1, 4)
    s = scores[:, 1:].reshape(-1)
    lab = np.tile(np.arange(c1 - 1), r)
    keep = s > score_threshold
    b, s, lab = b[keep], s[keep], lab[keep]
    if len(s):
        idx = batched_nms(torch.as_tensor(b, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64),
                          torch.as_tensor(lab), nms).numpy()[:max_per_image]
        b, s, lab = b[idx], s[idx], lab[idx]
    return Detections(b, s, lab)


def corloc_boxes(scores: np.ndarray, boxes: np.ndarray) -> Any:
    """The top-scoring box of every class (no NMS), for CorLoc."""
    from geolesf.metrics.detection import Detections

    r, c1 = scores.shape
    top = scores[:, 1:].argmax(axis=0)
    b = boxes.reshape(r, c1, 4)[top, np.arange(1, c1)]
    return Detections(b, scores[top, np.arange(1, c1)], np.arange(c1 - 1))


def evaluate_dataset(model: Any, dataset: Any, proposals: Any, *, scales: list[int], max_size: int = 2000,
                     flip: bool = True, nms: float = 0.4, score_threshold: float = 1e-5, max_per_image: int = 100,
                     coco: bool = False, iou_rule: str = "gt") -> dict[str, Any]:
    """Run the detector over ``dataset`` and score it (VOC mAP + CorLoc under ``iou_rule``, or COCO AP)."""
    from geolesf.metrics.detection import GroundTruth, check_iou_rule, coco_evaluate, coco_results, corloc, voc_map

    check_iou_rule(iou_rule)

    dets, tops, gts = {}, {}, {}
    for i in tqdm(range(len(dataset)), desc="wsod evaluate", unit="img", leave=False):
        item = dataset[i]
        rois = proposals(item["image_id"], item["image"])
        scores, boxes = model.detect(item["image"], rois, tuple(scales), max_size, flip)
        key = item["image_id"]
        dets[key] = postprocess(scores, boxes, nms, score_threshold, max_per_image)
        tops[key] = corloc_boxes(scores, boxes)
        gts[key] = GroundTruth(item["boxes"], item["labels"], item["difficult"])
    names = list(dataset.classes)
    if coco:
        stats = coco_evaluate(dataset.coco, coco_results(dets, dataset.category_ids), image_ids=list(dets))
        return {"images": len(dets), **stats,
                "summary": f"AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  AP75 {stats['AP75']:.4f}  "
                           f"({len(dets)} images, pycocotools)"}
    m07 = voc_map(dets, gts, names, use_07_metric=True, iou_rule=iou_rule)
    marea = voc_map(dets, gts, names, use_07_metric=False, iou_rule=iou_rule)
    cl = corloc(tops, gts, names, iou_rule=iou_rule)
    rule = "IoU>0.5" if iou_rule == "gt" else "IoU>=0.5"
    return {"images": len(dets), "mAP_11point": m07["mAP"], "mAP_area": marea["mAP"], "CorLoc": cl["CorLoc"],
            "AP_11point": m07["AP"], "AP_area": marea["AP"], "CorLoc_per_class": cl["per_class"],
            "iou_rule": iou_rule,
            "summary": f"mAP@0.5 {m07['mAP']:.4f} (11-point)  {marea['mAP']:.4f} (area)  CorLoc {cl['CorLoc']:.4f}  "
                       f"({len(dets)} images, {m07['classes_scored']} classes with objects, {rule})"}


def _dataset_for(name: str, data_root: str | None, opts: dict[str, Any]) -> tuple[Any, bool]:
    from geolesf.data.benchmarks.coco_det import COCODetection, find_coco_files
    from geolesf.data.benchmarks.voc_det import VOCDetection, find_year_dir

    roots = [Path(data_root)] if data_root else _catalog_dirs(name)
    if name in ("voc2007", "voc2012"):
        year = name[3:]
        for root in roots:
            try:
                year_dir = find_year_dir(root, year)
            except DataError:
                continue
            split = opts.get("split", "test" if year == "2007" else "val")
            if split and not (year_dir / "ImageSets" / "Main" / f"{split}.txt").is_file() and "split" not in opts:
                split = None  # samples without image lists: every annotation
            return VOCDetection(year_dir, year, split), False
        raise DataError(f"--dataset {name}: no VOC{year}/Annotations under {', '.join(map(str, roots)) or 'nothing'} "
                        "(give --data-root, the folder holding VOCdevkit)")
    if name.startswith("coco"):
        if opts.get("annotations") and opts.get("images"):
            return COCODetection(opts["annotations"], opts["images"]), True
        split = str(opts.get("split", "val2017" if name == "coco2017" else "val2014"))
        for root in roots:
            try:
                ann, images = find_coco_files(root, split)
                return COCODetection(ann, images), True
            except DataError:
                jsons = sorted(root.glob("*.json")) if root.is_dir() else []
                if len(jsons) == 1:
                    return COCODetection(jsons[0], root), True
        raise DataError(f"--dataset {name}: no annotations/instances_{split}.json under "
                        f"{', '.join(map(str, roots)) or 'nothing'}; give --data-root or "
                        "--option annotations=FILE.json --option images=DIR")
    raise ConfigError(f"--dataset: expected voc2007, voc2012 or coco2017 for a wsod checkpoint, found '{name}'")


def _catalog_dirs(name: str) -> list[Path]:
    from geolesf.data.catalog import search_dirs

    try:
        return [d for d in search_dirs(name) if d.is_dir()]
    except DataError:
        return []


def evaluate_checkpoint(checkpoint: str | Path, *, dataset: str | None, data_root: str | None, what: str | None,
                        out: str | None, device: str, batch_size: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """Score a checkpoint on VOC / COCO for ``geolesf evaluate`` (:func:`evaluate` unpacks the request)."""
    from geolesf.io.atomic import write_json
    from geolesf.methods.wsod.proposals import ProposalProvider

    unknown = sorted(set(options) - KNOWN)
    if unknown:
        raise ConfigError(f"--option {unknown[0]}: unknown for wsod evaluation (known: {', '.join(sorted(KNOWN))})")
    if not dataset:
        raise ConfigError("--dataset: required for a wsod checkpoint (voc2007, voc2012 or coco2017)")
    iou_rule = str(options.get("iou_rule", "gt"))
    if iou_rule not in ("gt", "ge"):
        raise ConfigError(f"--option iou_rule: expected gt (IoU > 0.5, NDI-WSOD/py-faster-rcnn) or ge "
                          f"(IoU >= 0.5, VOC MATLAB devkit), found {iou_rule!r}")
    if "iou_rule" in options and dataset.lower().startswith("coco"):
        raise ConfigError("--option iou_rule: applies to VOC mAP/CorLoc only; COCO AP is pycocotools' own matching")
    model, payload, digest = load_wsod_checkpoint(checkpoint, device)
    data, is_coco = _dataset_for(dataset.lower(), data_root, options)
    if options.get("limit"):
        data.ids = data.ids[: int(options["limit"])]
    if len(data.classes) != len(payload["class_names"]):
        raise DataError(f"--dataset {dataset}: {len(data.classes)} classes, but {checkpoint} was trained on "
                        f"{len(payload['class_names'])} ({payload.get('dataset')})")
    p, test = payload.get("proposals", {}), payload.get("test", {})
    source = options.get("proposals", "selective_search" if p.get("source", "selective_search") == "selective_search"
                         else None)
    if source is None:
        raise ConfigError(f"{checkpoint} was trained on precomputed proposals: give --option proposals=FILE.mat|.pkl")
    provider = ProposalProvider(source, mode=p.get("mode", "fast"),
                                max_side=options.get("proposal_max_side", p.get("max_side", 500)),
                                max_proposals=int(options.get("max_proposals", p.get("max_proposals", 2000))),
                                min_size=p.get("min_size", 8))
    scales = options.get("scales", test.get("scales", [480]))
    scales = [int(scales)] if isinstance(scales, (int, float)) else [int(s) for s in scales]
    result = evaluate_dataset(model, data, provider, scales=scales, max_size=int(test.get("max_size", 2000)),
                              flip=bool(options.get("flip", test.get("flip", True))),
                              nms=float(options.get("nms", test.get("nms", 0.4))),
                              score_threshold=float(options.get("score_threshold", 1e-5)),
                              max_per_image=int(options.get("max_per_image", 100)), coco=is_coco,
                              iou_rule=iou_rule)
    result.update({"dataset": dataset, "checkpoint": str(checkpoint), "checkpoint_sha256": digest,
                   "scales": scales})
    target = Path(out) if out else Path(str(checkpoint)).with_name(f"evaluation_{dataset}.json")
    if not Path(str(checkpoint)).is_file() and not out:
        target = Path(f"evaluation_{dataset}.json")
    write_json(target, result, indent=2)
    result["written_to"] = str(target)
    return result


def evaluate(request: Any) -> dict[str, Any]:
    """The :mod:`geolesf.formats` evaluator entry."""
    return evaluate_checkpoint(request.checkpoint, **request.benchmark_args())
