"""``biounet predict`` for the paper's unpadded U-Net (``unet_valid``, e.g. the ISBI 2012 model that
``biounet.em.train_em`` writes): images of any size by overlap-tile prediction with mirror padding."""

from __future__ import annotations

import numpy as np

from biounet.checkpoint import Checkpoint
from biounet.data.transforms import match_channels
from biounet.em.train_em import predict_interior
from biounet.errors import BiounetError
from biounet.infer import pick_device, resolve_precision
from biounet.predictor import Prediction  # biounet.predictor imports this module lazily


class OverlapTilePredictor:
    """Two-class softmax checkpoints (labels e.g. ("membrane", "interior")): prob (2, H, W); the
    first class is foreground where its probability exceeds the threshold chosen on held-out data
    and stored in the checkpoint (``membrane_threshold``), else 0.5; with the 8-view test-time
    augmentation where the checkpoint says it was chosen there, or ``tta`` asks for it."""

    def __init__(self, ck: Checkpoint, precision: str = "auto", tta: bool = False) -> None:
        if len(ck.labels) != 2 or ck.preprocess.get("output") != "softmax":
            raise BiounetError(
                f"unet_valid checkpoint with labels {ck.labels}: predict runs two-class softmax "
                "models (as biounet.em.train_em writes)"
            )
        self.device = pick_device()
        self.precision = resolve_precision(precision, self.device)
        self.model = ck.build().to(self.device)
        self.labels = ck.labels
        self.out_tile = int(ck.preprocess.get("out_tile", 388))
        self.in_channels = int(ck.preprocess.get("in_channels", 1))
        self.threshold = float(ck.extra.get("membrane_threshold", 0.5))
        self.tta = tta or bool(ck.extra.get("tta", False))  # --tta asks for it where not chosen
        # each label's cut, as evaluate reports them: the first where its probability exceeds
        # the threshold, the second everywhere else (its probability at least 1 - threshold)
        self.cuts = {self.labels[0]: self.threshold, self.labels[1]: 1.0 - self.threshold}

    def predict(self, img: np.ndarray) -> Prediction:
        if self.in_channels != 1:
            raise BiounetError("overlap-tile predict runs grey (1-channel) models only")
        grey = match_channels(img, 1)[..., 0]
        p1 = predict_interior(
            self.model, grey, self.out_tile, self.precision, tta=self.tta
        )  # (H, W)
        prob = np.stack([1.0 - p1, p1]).astype(np.float32)
        first = prob[0] > self.threshold
        return Prediction(prob, {self.labels[0]: first, self.labels[1]: ~first})
