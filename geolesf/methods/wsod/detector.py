"""The NDI-WSOD detector (registered as ``ndi-wsod``): backbone → RoI pool → fc6/fc7 → heads.

One image per forward (as the official code). ``forward(image, rois)`` returns the proposal
features, the WSDDN ``mil_score (R, C)``, ``K`` refinement probabilities ``(R, C+1)`` and, with
``with_frcnn``, the Fast R-CNN logits ``(R, C+1)`` and box deltas ``(R, 4(C+1))``.
:meth:`NDIWSOD.losses` computes the training objective of methods.md §7.3:

``L_mil + 3·L_ref0 + L_ref1 + L_ref2 + L_NCL + L_NICE + L_frcnn_cls + L_frcnn_box``

(NDI memory update first, then NCL on the MIL scores, NICE on the MIL scores and every refinement
branch, NGIS seeds for branch 0, MIST for branches k > 0 and for the Fast R-CNN head.)
:meth:`NDIWSOD.detect` gives test scores ``(Σ_k refine_k + softmax(frcnn)) / (K + 1)`` and the
regressed boxes (or the mean of the refinement branches and the proposals without Fast R-CNN).
Input images are normalised inside the model (``pixel_mean``/``pixel_std`` in 0–255 units,
``bgr`` channel order: the Caffe VGG16 convention by default).
``nice_variant`` picks the NICE threshold/eps: ``"standalone"`` (``NDI.py``: v ≥ ``ndi_tau``,
eps 1e-5; the default, as methods.md) or ``"training"`` (the official training path,
``model_builder.py``: v ≥ 0.001, eps 1e-6); see :mod:`geolesf.methods.wsod.ndi`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from geolesf.errors import ModelError
from geolesf.methods.wsod import oicr
from geolesf.methods.wsod.backbones import build_backbone, load_vgg16_weights
from geolesf.methods.wsod.ndi import NDIMemory, ncl_loss, nice_loss, nice_params
from geolesf.methods.wsod.wsddn import WSDDNHead, image_scores, mil_loss
from geolesf.registry import register_model

CAFFE_MEAN = (102.98, 115.95, 122.77)


class NDIWSOD(nn.Module):
    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "vgg16",
        backbone_weights: str | None = None,
        freeze_at: int = 2,
        width: int = 32,
        hidden: int | None = None,
        roi_size: int = 7,
        roi_op: str = "pool",
        dropout: float = 0.5,
        refine_times: int = 3,
        refine0_weight: float = 3.0,
        with_frcnn: bool = True,
        use_ndi: bool = True,
        ndi_length: int = 5,
        ndi_tau: float = 0.05,
        nice_variant: str = "standalone",
        ncl_alpha: float = 0.3,
        top_ratio: float = 0.15,
        seed_iou: float = 0.2,
        ngis_factor: float = 3.0,
        fg_threshold: float = 0.5,
        pixel_mean: tuple[float, ...] = CAFFE_MEAN,
        pixel_std: tuple[float, ...] = (1.0, 1.0, 1.0),
        bgr: bool = True,
    ) -> None:
        super().__init__()
        if roi_op not in ("pool", "align"):
            raise ModelError(f"ndi-wsod: roi_op must be 'pool' or 'align', found '{roi_op}'")
        if num_classes < 1 or refine_times < 1:
            raise ModelError(f"ndi-wsod: need num_classes ≥ 1 and refine_times ≥ 1, found {num_classes}, {refine_times}")
        self.num_classes, self.refine_times = int(num_classes), int(refine_times)
        self.roi_size, self.roi_op = int(roi_size), roi_op
        self.refine0_weight, self.with_frcnn, self.use_ndi = float(refine0_weight), bool(with_frcnn), bool(use_ndi)
        self.ncl_alpha, self.top_ratio, self.seed_iou = float(ncl_alpha), float(top_ratio), float(seed_iou)
        self.ngis_factor, self.fg_threshold, self.bgr = float(ngis_factor), float(fg_threshold), bool(bgr)
        self.body, self.head, _, self.spatial_scale = build_backbone(backbone, self.roi_size, hidden, width, dropout)
        if backbone_weights:
            if backbone != "vgg16":
                raise ModelError("ndi-wsod: backbone_weights is only for the vgg16 backbone")
            load_vgg16_weights(self.body, self.head, backbone_weights)
        if backbone == "vgg16" and freeze_at > 0:
            # Detectron VGG.FREEZE_AT = 2: conv1_x and conv2_x (features[0:10]) stay at their ImageNet values.
            ends = {1: 5, 2: 10, 3: 17, 4: 24, 5: 31}
            if freeze_at not in ends:
                raise ModelError(f"ndi-wsod: freeze_at must be 0..5, found {freeze_at}")
            for p in self.body[: ends[freeze_at]].parameters():
                p.requires_grad_(False)
        dim = self.head.out_dim
        self.mil = WSDDNHead(dim, num_classes)
        self.refine = nn.ModuleList(nn.Linear(dim, num_classes + 1) for _ in range(refine_times))
        for fc in self.refine:
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)
        if self.with_frcnn:
            self.frcnn_cls = nn.Linear(dim, num_classes + 1)
            self.frcnn_bbox = nn.Linear(dim, 4 * (num_classes + 1))
            nn.init.normal_(self.frcnn_cls.weight, std=0.01)
            nn.init.zeros_(self.frcnn_cls.bias)
            nn.init.normal_(self.frcnn_bbox.weight, std=0.001)
            nn.init.zeros_(self.frcnn_bbox.bias)
        self.ndi = NDIMemory(num_classes, dim, ndi_length, ndi_tau)
        try:
            self.nice_tau, self.nice_eps = nice_params(nice_variant, ndi_tau)
        except ValueError as e:
            raise ModelError(f"ndi-wsod: {e}") from None
        self.nice_variant = nice_variant
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1))

    # ------------------------------------------------------------------------------ forward

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` → normalised ``(1, 3, H, W)`` float tensor on the model's device."""
        x = torch.from_numpy(np.array(image, dtype=np.float32)).to(self.pixel_mean.device)
        x = x.permute(2, 0, 1)[None]
        if self.bgr:
            x = x.flip(1)
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, image: torch.Tensor, rois: torch.Tensor) -> dict[str, Any]:
        if image.dim() != 4 or image.shape[0] != 1:
            raise ModelError(f"ndi-wsod: expected one image (1, 3, H, W), found {tuple(image.shape)}")
        feat = self.body(image)
        boxes = [rois.to(feat.dtype)]
        if self.roi_op == "pool":
            pooled = roi_pool(feat, boxes, self.roi_size, self.spatial_scale)
        else:
            pooled = roi_align(feat, boxes, self.roi_size, self.spatial_scale, sampling_ratio=2, aligned=False)
        f = self.head(pooled)
        out: dict[str, Any] = {"features": f, "mil_score": self.mil(f),
                               "refine": [torch.softmax(fc(f), dim=1) for fc in self.refine]}
        if self.with_frcnn:
            out["frcnn_cls"] = self.frcnn_cls(f)
            out["frcnn_bbox"] = self.frcnn_bbox(f)
        return out

    # ------------------------------------------------------------------------------- losses

    def losses(self, out: dict[str, Any], rois: torch.Tensor, image_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """All training losses for one image (updates the NDI memory when ``use_ndi``)."""
        feats, mil_score = out["features"], out["mil_score"]
        labels = image_labels.to(mil_score.device).float().reshape(-1)
        losses: dict[str, torch.Tensor] = {"mil": mil_loss(image_scores(mil_score), labels)}
        similarity = None
        if self.use_ndi:
            self.ndi.update(feats, mil_score, labels)
            losses["ncl"], n_cos = ncl_loss(feats, mil_score, self.ndi, self.ncl_alpha)
            similarity = n_cos.cpu().numpy()
            nice = nice_loss(mil_score, labels, self.nice_tau, self.nice_eps)
        boxes = rois.detach().cpu().numpy().astype(np.float64)
        lab_np = labels.cpu().numpy()
        previous = mil_score.detach().cpu().numpy()
        for k, prob in enumerate(out["refine"]):
            seeds = oicr.mine_seeds(boxes, previous, lab_np, self.top_ratio, self.seed_iou,
                                    similarity if k == 0 else None, self.ngis_factor)
            a = oicr.assign_pseudo_labels(boxes, seeds, self.fg_threshold)
            loss = oicr.refine_loss(prob, torch.as_tensor(a.labels, device=prob.device),
                                    torch.as_tensor(a.weights, dtype=prob.dtype, device=prob.device))
            losses[f"refine{k}"] = loss * (self.refine0_weight if k == 0 else 1.0)
            if self.use_ndi:
                nice = nice + nice_loss(prob, labels, self.nice_tau, self.nice_eps)
            previous = prob.detach().cpu().numpy()[:, 1:]
        if self.use_ndi:
            losses["nice"] = nice
        if self.with_frcnn:
            seeds = oicr.mine_seeds(boxes, previous, lab_np, self.top_ratio, self.seed_iou)
            a = oicr.assign_pseudo_labels(boxes, seeds, self.fg_threshold)
            losses["frcnn_cls"], losses["frcnn_box"] = oicr.frcnn_losses(out["frcnn_cls"], out["frcnn_bbox"], boxes, a)
        return losses

    # ---------------------------------------------------------------------------- inference

    @torch.no_grad()
    def detect_scaled(self, image: np.ndarray, rois: np.ndarray, scale: float, flip: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(R, C+1)`` and boxes ``(R, 4(C+1))`` (original pixel grid) at one scale/flip."""
        import cv2

        h, w = image.shape[:2]
        img = image[:, ::-1] if flip else image
        boxes = np.asarray(rois, dtype=np.float64).copy()
        if flip:
            boxes[:, [0, 2]] = w - 1 - boxes[:, [2, 0]]
        if scale != 1.0:
            img = cv2.resize(np.ascontiguousarray(img), (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_LINEAR)
        x = self.preprocess(img)
        t_rois = torch.as_tensor(boxes * scale, dtype=torch.float32, device=x.device)
        out = self(x, t_rois)
        scores = torch.stack(out["refine"]).sum(0)
        if self.with_frcnn:
            scores = (scores + torch.softmax(out["frcnn_cls"], dim=1)) / (self.refine_times + 1)
            pred = oicr.decode_boxes(torch.as_tensor(boxes, dtype=torch.float32, device=x.device), out["frcnn_bbox"])
            pred = pred.reshape(len(boxes), -1, 4)
            pred[..., 0::2] = pred[..., 0::2].clamp(0, w - 1)
            pred[..., 1::2] = pred[..., 1::2].clamp(0, h - 1)
            pred_np = pred.reshape(len(boxes), -1).cpu().numpy().astype(np.float64)
        else:
            scores = scores / self.refine_times
            pred_np = np.tile(boxes, (1, self.num_classes + 1))
        if flip:
            p = pred_np.reshape(len(boxes), -1, 4)
            p[..., [0, 2]] = w - 1 - p[..., [2, 0]]
            pred_np = p.reshape(len(boxes), -1)
        return scores.cpu().numpy().astype(np.float64), pred_np

    @torch.no_grad()
    def detect(self, image: np.ndarray, rois: np.ndarray, scales: tuple[int, ...] = (480,),
               max_size: int = 2000, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Scores and boxes averaged over test scales (shorter side in px) and horizontal flip."""
        h, w = image.shape[:2]
        all_s, all_b = [], []
        for target in scales:
            scale = min(float(target) / min(h, w), float(max_size) / max(h, w))
            for fl in ((False, True) if flip else (False,)):
                s, b = self.detect_scaled(image, rois, scale, fl)
                all_s.append(s)
                all_b.append(b)
        return np.mean(all_s, axis=0), np.mean(all_b, axis=0)


@register_model("ndi-wsod", method="wsod", kind="boxes")
def ndi_wsod(num_classes: int = 20, **kwargs: Any) -> NDIWSOD:
    """NDI-WSOD: WSDDN + OICR refinement + negative deterministic information (IJCAI 2022)."""
    return NDIWSOD(num_classes=num_classes, **kwargs)
