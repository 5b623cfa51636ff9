"""Training configuration: a frozen dataclass plus a small registry of named configs.

``get_config("cpu")`` returns a registered config; ``get_config("my.toml")`` (or
``.yaml``/``.yml``) loads a file whose keys override the named config given by its
``base`` key (without ``base`` the file must be a complete config). The nested
``[augment]`` table is merged field by field; ``backbones`` is replaced as a whole::

    base = "cpu"
    epochs = 4
    [augment]
    mixup_p = 0.0
    [[backbones]]
    backbone = "mobilenetv3_small_050"
    crop_seconds = 4.0

Unknown field names, unknown timm backbones and out-of-range values raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from engine.windows import MODES
from rfcx.errors import ConfigError
from rfcx.train.teachers import COMBINES

OPTIMIZERS = ("adamw", "sgd")  # sgd: momentum 0.9, Nesterov (rfcx.train.member.make_optimizer)
SCHEDULES = ("cosine", "constant")
PSEUDO_RESCALE = ("none", "quantile", "prior", "tp_clips")
DISTRIBUTE = ("folds", "ddp")
# How a run is executed, not what it learns: a run resumes under other values of these (rfcx.train.rounds)
EXECUTION_FIELDS = ("num_workers", "cpu_processes", "store_cache_mb")
SCORE_MODES = MODES  # rfcx.train.pseudo.predict_windows scores as the engine does
PSEUDO_TEACHERS = ("oof", "ensemble")
TEMPLATE_COMBINES = COMBINES  # rfcx.train.teachers


def _close(name: str, choices: typing.Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.6)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _check_range(name: str, value: float, lo: float, hi: float = float("inf")) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} = {value!r} is outside [{lo}, {hi}]")


def _check_choice(name: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} = {value!r} is not one of {list(choices)}{_close(value, choices)}")


@dataclass(frozen=True)
class ModelSpec:
    """One ensemble member: a timm model name and the training crop length."""

    backbone: str
    crop_seconds: float

    def __post_init__(self) -> None:
        import timm  # deferred: importing timm is slow and only needed to validate

        if not timm.is_model(self.backbone):
            raise ConfigError(
                f"backbone {self.backbone!r} is not a timm model{_close(self.backbone, timm.list_models())}"
            )
        _check_range("crop_seconds", self.crop_seconds, 0.1)


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample probabilities and strengths of the training augmentations (rfcx.train.augment)."""

    time_warp_p: float = 0.5
    time_warp_max: float = 0.1  # fraction of the crop's frames the centre may move
    freq_mask_p: float = 0.5  # round 0: mask mel bins below/above the box band
    noise_p: float = 0.5
    noise_std_db: float = 2.0  # noise std uniform in [0, noise_std_db]
    gain_p: float = 0.5
    gain_db: float = 6.0  # gain uniform in [-gain_db, gain_db]
    spec_augment_p: float = 0.5  # rounds >= 1
    spec_time_masks: int = 2
    spec_time_max: float = 0.1  # max band width as a fraction of frames
    spec_freq_masks: int = 2
    spec_freq_max: float = 0.1  # max band width as a fraction of mel bins
    mixup_p: float = 0.5
    # beyond the seed: the spectrogram moved by up to pitch_shift_bins mel bins (7: about 12 % above 1 kHz), every
    # round; off (0) in the registered configs
    pitch_shift_p: float = 0.0
    pitch_shift_bins: int = 7

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_p") or f.name.endswith("_max"):
                _check_range(f.name, value, 0.0, 1.0)
            else:
                _check_range(f.name, value, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (rounds x folds x ensemble members)."""

    name: str
    backbones: tuple[ModelSpec, ...]
    epochs: int
    batches_per_epoch: int
    batch_size: int
    lr: float
    weight_decay: float
    folds: int = 4
    # Epochs of the members that learn from every window's labels: rounds >= 1 (soft pseudo labels) and the oracle
    # (the calls' truth); 0: ``epochs``. Round 0 learns from a few hundred boxes and gains little from more steps;
    # its students take in tens of thousands of labelled windows and keep gaining (``cpu``: README "A detector that
    # works")
    pseudo_epochs: int = 0
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: int = 0
    mixup_alpha: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tp_fp_sampling: bool = True  # rounds >= 1: with probability tp_fp_p a crop is around a TP/FP box with labels
    tp_fp_p: float = 0.5  # fixed by the boxes, otherwise a random window with its pseudo labels
    # The share of box crops (every round) drawn around a TP box rather than an FP box; 0: every box alike (the seed's:
    # the real tables hold 1 TP box for 6 FP boxes, so 6 box crops in 7 teach a negative only)
    tp_box_share: float = 0.0
    freq_channel: bool = True  # append the FreqConv mel-index channel (in_chans = 2)
    input_pool: tuple[int, int] = (1, 1)  # (freq, time) avg-pool factors on the crop
    pseudo_hop_seconds: float = 0.5  # hop of the sliding windows scored for pseudo labels
    # How a round scores the out-of-fold and test windows: "exact" (one forward per window, the engine's --mode
    # exact) or "fcn" (one forward per clip, windows pooled from the feature map: ~crop/hop times less compute;
    # a backbone without that path is scored exactly)
    score_mode: str = "exact"
    # Soft labels as the previous round's out-of-fold scores ("none", the seed's) or rescaled per class ("quantile"):
    # scores at or below the class's pseudo_quantiles[0] quantile over all windows -> 0, at or above [1] -> 1.
    pseudo_rescale: str = "none"
    # Who scores a train clip for the next round's soft labels: "oof", the members that held it out (the seed's);
    # "ensemble", every member of the round. A member trained on a clip learnt from its boxes only, so away from
    # them its scores are predictions too, and the whole ensemble is the better teacher (benchmark set, windows
    # away from boxes, per-class AUC against the calls' truth: 0.73 from the held-out member, 0.82 from all four).
    pseudo_teacher: str = "oof"
    pseudo_quantiles: tuple[float, float] = (0.9, 0.99)
    # Rounds >= 1: a second teacher, the TP boxes as templates matched over every training clip (rfcx.train.templates);
    # a window's soft label is the larger of the two teachers' (the seed: false, the network alone)
    pseudo_templates: bool = False
    # How the two teachers' labels of a window combine: "max", the larger; "mean", their mean (for the species the
    # templates calibrate; the others keep the network's label). The mean's labels are closer to the calls' truth
    # (their clip LWLRAP on the train clips: benchmark set 0.846 -> 0.920, held-back shape 0.901 -> 0.975), yet the
    # students learn less from them: round 1's test LWLRAP 0.840 (max) vs 0.814 (mean) on the benchmark set, 0.806
    # vs 0.772 on the held-back shape (same round 0 and templates). "select": per species the template label alone
    # where the templates find the TP boxes clearly better than the network, else "max" (rfcx.train.teachers): 0.798 vs
    # 0.806 on the held-back shape. Kept as options; "max" is every config's. "geometric": the larger of the network's
    # label and the geometric mean of both (a match counts as far as the network believes in the species; for
    # variable calls, where templates match widely: rfcx.train.teachers)
    pseudo_templates_combine: str = "max"
    # How far a template may match from its own call: ``template_shift`` pooled mel bins of pitch each way (a pooled
    # bin is two mel bins: about 3 % of the frequency at 2-10 kHz), and once per factor of ``template_stretches`` in
    # time (a call sung faster or slower); every match counts at its best shift and stretch
    template_shift: int = 1
    template_stretches: tuple[float, ...] = (1.0,)
    # Round 0 beyond the seed's masked BCE: ``unlabelled_weight`` > 0 gives every class that no box in a crop tells
    # about target 0 with this weight (most windows hold no call of a given species; the seed: 0, unknown);
    # ``random_crop_p``: the share of round-0 crops drawn anywhere in the training clips instead of around a box.
    unlabelled_weight: float = 0.0
    random_crop_p: float = 0.0
    # Rounds >= 1: a soft label ``y`` weighs ``w + (1 - w) * y`` in the loss (``w`` = pseudo_negative_weight; 1, the
    # seed's: every label fully). Below 1 the windows the previous round scored low are weak negatives, as round 0's
    # unlabelled classes are: its calls it missed are not taught as confident negatives.
    pseudo_negative_weight: float = 1.0
    oracle: bool = False  # learn from every call's truth (rfcx train --oracle; synthetic data's calls_truth.csv)
    channels_last: bool = False
    num_workers: int = 0
    # Training on the CPU: this many processes train the round's members side by side, each with its share of the
    # threads (rfcx.process_group.run_local; under torchrun the launch decides instead). 0: as many as torch has
    # threads (OMP_NUM_THREADS, else the cores), at most one per member. A small network barely speeds up with a
    # second thread: on 2 cores two one-thread processes train 1.6x the crops per second of one two-thread process
    cpu_processes: int = 1
    store_cache_mb: int = 2048  # decoded clips kept in memory per process (0: read chunks for every crop)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    # Under torchrun (many processes): "folds" spreads the round's members (backbones x folds) over the ranks,
    # each trained by one process; "ddp" trains every member on all ranks together (DistributedDataParallel,
    # batch_size // world crops per rank per step, so the global batch stays batch_size). One process: the same.
    distribute: str = "folds"
    # Backbone weights a member starts from: false (random), "imagenet" (timm's pretrained weights: downloaded, needs
    # a network) or the path of a local state dict of the backbone (.pth/.pt or .safetensors; rfcx.train.models)
    pretrained: bool | str = False

    def __post_init__(self) -> None:
        if not self.backbones:
            raise ConfigError("backbones must list at least one model")
        _check_range("folds", self.folds, 2)
        for name in ("epochs", "batches_per_epoch", "batch_size"):
            _check_range(name, getattr(self, name), 1)
        _check_range("pseudo_epochs", self.pseudo_epochs, 0)
        _check_range("lr", self.lr, 0.0)
        _check_range("weight_decay", self.weight_decay, 0.0)
        _check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        _check_range("mixup_alpha", self.mixup_alpha, 1e-6)  # Beta(alpha, alpha); mixup_p = 0 disables
        _check_range("tp_fp_p", self.tp_fp_p, 0.0, 1.0)
        _check_range("unlabelled_weight", self.unlabelled_weight, 0.0, 1.0)
        _check_range("random_crop_p", self.random_crop_p, 0.0, 1.0)
        _check_range("pseudo_negative_weight", self.pseudo_negative_weight, 0.0, 1.0)
        _check_range("tp_box_share", self.tp_box_share, 0.0, 1.0)
        _check_range("pseudo_hop_seconds", self.pseudo_hop_seconds, 0.01)
        _check_choice("pseudo_rescale", self.pseudo_rescale, PSEUDO_RESCALE)
        _check_choice("score_mode", self.score_mode, SCORE_MODES)
        _check_choice("pseudo_teacher", self.pseudo_teacher, PSEUDO_TEACHERS)
        _check_choice("pseudo_templates_combine", self.pseudo_templates_combine, TEMPLATE_COMBINES)
        _check_range("template_shift", self.template_shift, 0, 16)
        if not self.template_stretches or not all(0.25 <= f <= 4.0 for f in self.template_stretches):
            raise ConfigError(f"template_stretches = {self.template_stretches!r} must list factors in [0.25, 4]")
        if len(self.pseudo_quantiles) != 2 or not 0.0 <= self.pseudo_quantiles[0] < self.pseudo_quantiles[1] <= 1.0:
            raise ConfigError(f"pseudo_quantiles = {self.pseudo_quantiles!r} must be two quantiles 0 <= lo < hi <= 1")
        _check_range("num_workers", self.num_workers, 0)
        _check_range("cpu_processes", self.cpu_processes, 0)
        _check_range("store_cache_mb", self.store_cache_mb, 0)
        if len(self.input_pool) != 2 or min(self.input_pool) < 1:
            raise ConfigError(f"input_pool = {self.input_pool!r} must be two factors >= 1 (freq, time)")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("distribute", self.distribute, DISTRIBUTE)
        if not (self.pretrained is False or (isinstance(self.pretrained, str) and self.pretrained.strip())):
            raise ConfigError(
                f"pretrained = {self.pretrained!r} must be false, 'imagenet' (timm's weights, downloaded) "
                f"or the path of a local weights file (.pth/.pt state dict or .safetensors)"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device = {self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    def epochs_of(self, round_idx: int) -> int:
        """Epochs a member of round ``round_idx`` trains: ``epochs`` in round 0, ``pseudo_epochs`` (where set) in
        rounds >= 1 and for the oracle."""
        later = round_idx > 0 or self.oracle
        return self.pseudo_epochs if later and self.pseudo_epochs else self.epochs

    @property
    def in_chans(self) -> int:
        """Model input channels: the dB spectrogram plus the optional frequency channel."""
        return 2 if self.freq_channel else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists, not tuples): safe for JSON/YAML/checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys and wrong types raise ValueError."""
        return _build(cls, data, "")

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with some fields changed (validated like :meth:`from_dict`)."""
        return _merge(self, changes)

    def diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (self_value, other_value)}`` for each differing field (nested as
        ``augment.<field>``, values as in :meth:`to_dict`); empty when equal. ``name``
        is compared too; drop it from the result to compare settings only."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return {
            k: (mine.get(k), theirs.get(k)) for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _coerce(tp: Any, value: Any, name: str) -> Any:
    """Convert a builtin value (from a dict/TOML/YAML) to the annotated field type."""
    if dataclasses.is_dataclass(tp):
        cls = cast(type, tp)  # a field's annotation: the dataclass itself
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a table/mapping, got {value!r}")
        return _build(cls, value, f"{name}.")
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{name} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{name} must be of type {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config field '{prefix}{key}'{_close(key, names)}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required fields
        raise ConfigError(f"incomplete config{(' section ' + prefix.rstrip('.')) if prefix else ''}: {e}") from None
    except ValueError as e:  # value checks of a nested section: say which one
        if prefix:
            raise ConfigError(f"{prefix.rstrip('.')}: {e}") from None
        raise


def _merge(base: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    data = base.to_dict()
    for key, value in overrides.items():
        if key == "augment" and isinstance(value, Mapping):
            data["augment"] = {**data["augment"], **value}
        elif key == "augment" and isinstance(value, AugmentConfig):
            data["augment"] = dataclasses.asdict(value)
        else:
            # an override is a value: a dataclass instance, not a class
            data[key] = _plain(dataclasses.asdict(cast(Any, value))) if dataclasses.is_dataclass(value) else value
    return TrainConfig.from_dict(data)


_REGISTRY: dict[str, Callable[[], TrainConfig]] = {}


def register_config(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    """Decorator registering a config factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_configs() -> list[str]:
    """Names of the registered configs."""
    return sorted(_REGISTRY)


@register_config
def seed() -> TrainConfig:
    """The original write-up: 4 folds x {rexnet_200, efficientnet_b3 on 4 s; rexnet_150,
    efficientnet_b1 on 8 s}, FreqConv input (2 channels), AdamW + cosine, 60 epochs x
    200 batches, last epoch kept (no checkpoint picking). Batch size, lr and weight
    decay are not given there: 16, 1e-3 and 1e-2 are our choices."""
    return TrainConfig(
        name="seed",
        backbones=(
            ModelSpec("rexnet_200", 4.0),
            ModelSpec("efficientnet_b3", 4.0),
            ModelSpec("rexnet_150", 8.0),
            ModelSpec("efficientnet_b1", 8.0),
        ),
        folds=4,
        epochs=60,
        batches_per_epoch=200,
        batch_size=16,
        lr=1e-3,
        weight_decay=1e-2,
        num_workers=4,
        channels_last=True,
    )


@register_config
def cpu() -> TrainConfig:
    """Laptop-sized: mobilenetv3_small_100 on 4 s crops pooled 256x376 -> 128x188, sized for rounds 0-1 x 4 folds
    on a few hundred clips on 2 CPU cores in 45 minutes (4 fold-trainings x 16 epochs + 4 x 96 epochs, x 40 batches
    x 16 crops = 287k crops at ~180 crops/s on two processes, plus the sliding-window scoring of every clip each
    round, fully convolutional: ``score_mode = "fcn"``, ~6x cheaper than one forward per window).

    Beyond the seed (each a switch, measured in the quality benchmark; README "A detector that works"):
    - no augmentation but the round-0 frequency masking: in a schedule this short (640 steps, not the seed's
      12,000) mixup, time warp, noise, gain and SpecAugment cost more than they give (one fold on the benchmark
      set: oracle 0.709 with them, 0.771 without mixup, 0.795 without any; round 0 0.336 -> 0.429);
    - round 0 also sees unlabelled windows: 30 % of its crops anywhere in the clips (``random_crop_p``), and
      every class no box tells about counts as a weak negative (``unlabelled_weight`` 0.05): a bootstrap that
      never sees an empty window scores background at its box base rate, and the clip max over 113 windows
      turns that into confident false species;
    - rounds >= 1 keep the raw out-of-fold scores as soft labels (the seed's ``pseudo_rescale = "none"``: against
      the calls' truth they are better calibrated than either rescaling), and a low soft label weighs 0.05
      (``pseudo_negative_weight``): the previous round misses most calls, which full-weight labels would teach
      as negatives;
    - the soft labels come from the whole ensemble (``pseudo_teacher = "ensemble"``), not only the member that
      held the clip out: against the calls' truth the labels' per-class window AUC rises from 0.73 to 0.82;
    - rounds >= 1 (and the oracle, their ceiling) train six times round 0's steps (``pseudo_epochs`` 96): on the
      benchmark set round 1 went from test LWLRAP 0.526 (16 epochs) to 0.601 (32) and 0.642 / 0.652 (48, two runs),
      before the template teacher; with it, on the held-back shape, 0.806 (48) -> 0.858 (96), the oracle 0.906 ->
      0.977 (the gap closed 47 % -> 54 %). Augmentations and a time-max head gave nothing;
    - half the box crops are around a TP box (``tp_box_share`` 0.5), not one in seven as the tables hold them: on
      the benchmark set round 0 0.503 -> 0.599, round 1 0.652 -> 0.683;
    - a second teacher for round 1 (``pseudo_templates``): the TP boxes as templates matched over every training
      clip (rfcx.train.templates), for the calls the bootstrap cannot find (short ones above all); a window learns the
      larger of the two labels: on the benchmark set round 1 0.683 -> 0.849 (68 % of the gap to the oracle);
    - the members train two at a time on 2 cores, a process and a thread each (``cpu_processes`` 0: one process per
      thread): 1.4x the crops per second of one two-thread process; rounds 0-1 on the benchmark set took 36.3 min
      (round 1 0.876, 75 % of the gap) where one process took 46.5."""
    return TrainConfig(
        name="cpu",
        backbones=(ModelSpec("mobilenetv3_small_100", 4.0),),
        folds=4,
        epochs=16,
        pseudo_epochs=96,
        tp_box_share=0.5,
        pseudo_templates=True,
        batches_per_epoch=40,
        batch_size=16,
        lr=2e-3,
        weight_decay=1e-2,
        input_pool=(2, 2),
        unlabelled_weight=0.05,
        random_crop_p=0.3,
        pseudo_rescale="none",
        pseudo_negative_weight=0.05,
        pseudo_teacher="ensemble",
        score_mode="fcn",
        augment=AugmentConfig(mixup_p=0.0, time_warp_p=0.0, noise_p=0.0, gain_p=0.0, spec_augment_p=0.0),
        channels_last=True,
        num_workers=0,
        cpu_processes=0,
        device="cpu",
    )


@register_config
def tiny() -> TrainConfig:
    """For tests: timm's ``test_efficientnet`` (~0.1 M params, builds in ms), 2 folds,
    one epoch of 2 batches of 4, input pooled 4x4."""
    return TrainConfig(
        name="tiny",
        backbones=(ModelSpec("test_efficientnet", 2.0),),
        folds=2,
        epochs=1,
        batches_per_epoch=2,
        batch_size=4,
        lr=1e-3,
        weight_decay=0.0,
        input_pool=(4, 4),
        num_workers=0,
        device="cpu",
    )


def _load_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        with path.open("rb") as f:
            return tomllib.load(f)
    if suffix in (".yaml", ".yml"):
        with path.open() as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return data
    raise ConfigError(f"{path}: config files must be .toml, .yaml or .yml")


def get_config(name_or_path: str | Path) -> TrainConfig:
    """A registered config by name, or a TOML/YAML file overriding its ``base`` config.

    A file without a ``name`` key is named after its stem.
    """
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key]()
    path = Path(key)
    if not path.is_file():
        raise ConfigError(
            f"unknown config {key!r}: not a registered name {list_configs()}{_close(key, _REGISTRY)} nor a file"
        )
    data = _load_file(path)
    data.setdefault("name", path.stem)
    base = data.pop("base", None)
    if base is None:
        return TrainConfig.from_dict(data)
    if base not in _REGISTRY:
        raise ConfigError(f"{path}: unknown base config {base!r}{_close(str(base), _REGISTRY)}")
    return _merge(_REGISTRY[base](), data)


def apply_overrides(cfg: TrainConfig, items: typing.Iterable[str]) -> TrainConfig:
    """``cfg`` with ``key=value`` overrides (``rfcx train --set``; the value is read as YAML: 3, 0.5, true, [a, b]).
    A field of the ``augment`` section is ``augment.<field>=value`` (as :meth:`TrainConfig.diff` names it)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        section, dot, field_ = key.strip().partition(".")
        if dot:
            if section != "augment":
                raise ConfigError(f"--set {key.strip()}: only the augment section has fields (augment.<field>)")
            merged = overrides.setdefault("augment", {})
            if not isinstance(merged, dict):
                raise ConfigError("--set augment=... and --set augment.<field>=... cannot be combined")
            merged[field_] = yaml.safe_load(value)
        else:
            overrides[section] = yaml.safe_load(value)
    return cfg.replace(**overrides) if overrides else cfg


__all__ = [
    "AugmentConfig",
    "ModelSpec",
    "TrainConfig",
    "apply_overrides",
    "get_config",
    "list_configs",
    "register_config",
]
