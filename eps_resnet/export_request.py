"""What an export is asked to do (prune_export.py's flags, the arguments of prune.export) as one value, checked
without TensorFlow so that a bad flag is answered before anything heavy loads."""
import math
from dataclasses import dataclass
from typing import Optional

from . import UserError
from .methods import check_channel_threshold

CRITERIA = ("calibration", "ema")  # the blocks' removal rule: held-out responses below ε, or the released code's
TFLITE_FILES = {None: "model.tflite", "dynamic": "model_dynamic.tflite"}  # by --quantize flavour (None: float32)
QUANTIZE = tuple(q for q in TFLITE_FILES if q is not None)


@dataclass(frozen=True)
class ExportRequest:
    """`checkpoint`: a step or model-N (default: the run's newest); `data_dir`: the data set's directory;
    `calib_batches`: validation batches of 64 to calibrate on (default: the whole split); `criterion`: one of
    CRITERIA; `verify`: check every artefact in a clean process; `force`: replace an earlier export; `measure`:
    time the networks; `version`: the SavedModel's directory; `quantize`: also a TFLite file in that flavour;
    `baseline`: a plain run to score on the same images; `epsilon`: remove at this ε above the trained one (a
    frontier point); `recompute_bn`: training batches of 64 to re-estimate the reduced network's BatchNorm
    statistics on (0: keep training's); `channel_threshold`: remove channel slots with a norm below it (default:
    the channel method's for a run trained with --channel-penalty)."""
    checkpoint: Optional[str] = None
    data_dir: Optional[str] = None
    calib_batches: Optional[int] = None
    criterion: str = "calibration"
    verify: bool = True
    force: bool = False
    measure: bool = True
    version: int = 1
    quantize: Optional[str] = None
    baseline: Optional[str] = None
    epsilon: Optional[float] = None
    recompute_bn: int = 0
    channel_threshold: Optional[float] = None

    def check(self) -> "ExportRequest":
        if self.epsilon is not None and not math.isfinite(self.epsilon):  # argparse's float() takes "nan", "inf"
            raise UserError("--epsilon must be a finite number, got %r" % (self.epsilon,))
        if self.criterion not in CRITERIA:
            raise UserError("--criterion must be one of %s, got %r" % (", ".join(CRITERIA), self.criterion))
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise UserError("--quantize must be one of %s (or left out for float32 only), got %r"
                            % (", ".join(QUANTIZE), self.quantize))
        check_recompute_bn(self.recompute_bn)
        check_calib_batches(self.calib_batches)
        check_channel_threshold(self.channel_threshold)
        if not self.version >= 1:
            raise UserError("--version must be a positive integer (TensorFlow Serving's version directory), got %r"
                            % (self.version,))
        return self


def check_recompute_bn(batches: int):
    if not batches >= 0:
        raise UserError("--recompute-bn takes a number of training batches (0: keep the trained statistics), got %r"
                        % (batches,))


def check_calib_batches(batches: Optional[int]):
    if batches is not None and not batches >= 1:
        raise UserError("--calib-batches takes a number of validation batches >= 1 (or leave it out for the whole "
                        "split), got %r" % (batches,))
