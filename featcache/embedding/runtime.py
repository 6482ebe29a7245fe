"""Which engine runs a loaded backbone's forward pass: TensorFlow or OpenVINO.

TensorFlow always decodes (tf.data) and builds the backbone; ``use_runtime``
may then hand its graph (``Backbone.graph_fn``: preprocessing and model as one
``tf.function``) to ``openvino.convert_model`` in memory and run the compiled
model instead. Keras and TF Hub / SavedModel backbones convert the same way;
one that does not is run by TensorFlow with a logged note (``auto``) or
refused (``openvino``).

Fingerprint rule: f32 features from either runtime equal Keras's to the parity
bound, so they share one cache entry (the runtime is recorded for information
only). bf16 is part of the spec, so its rows get their own entry.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np

from featcache.embedding.backbones import Backbone, variant_fingerprint
from featcache.errors import FeatcacheError
from featcache.threads import available_cores

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "tensorflow", "openvino")
PRECISIONS = ("f32", "bf16")
# The parity bound of tests/test_embed.py: features equal Keras's to 1e-4 relative.
PARITY_RTOL = 1e-4
# OpenVINO's forward pass and tf.data's decode pool (autotuner off, see decode.py) both
# get every core: decoding is a sixth of the work and fills inference's gaps. Measured
# on 2 quiet cores (1,000 640x480 JPEGs, embed loop): 2+2 153 images/s, 2+1 139-148,
# 1+1 91. (An earlier 1+1 default was measured with 8 other jobs on the cores.)
INFERENCE_THREADS = None  # None: every core
DATA_THREADS = None       # None: every core


def check_runtime(runtime: str, precision: str) -> None:
    """Reject unknown or contradictory ``runtime=``/``precision=`` values before any work."""
    if runtime not in RUNTIMES:
        raise FeatcacheError(f"unknown runtime={runtime!r}: choose {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise FeatcacheError(f"unknown precision={precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "bf16" and runtime == "tensorflow":
        raise FeatcacheError("precision=bf16 runs on OpenVINO only: use runtime=openvino "
                             "(or auto), or precision=f32 with runtime=tensorflow")
    if precision == "bf16":
        core = openvino_core()
        if core is None:
            raise FeatcacheError("precision=bf16 needs OpenVINO with a CPU device: pip install "
                                 "openvino, or use precision=f32")
        if not cpu_has_bf16(core):
            raise FeatcacheError(f"precision=bf16: this CPU ({cpu_description()['model']}) has "
                                 "no bf16 support (AVX512_BF16 or AMX); use precision=f32")


def thread_split(cores: int | None = None) -> tuple[int, int]:
    """``(OpenVINO inference threads, tf.data decode threads)`` for this machine."""
    cores = cores or available_cores()
    return INFERENCE_THREADS or cores, DATA_THREADS or cores


def openvino_core():
    """An ``openvino.Core`` with a CPU device, or None (with the reason logged at debug level)."""
    try:
        import openvino as ov
        core = ov.Core()
        if "CPU" in core.available_devices:
            return core
        logger.debug("OpenVINO has no CPU device here: %s", core.available_devices)
    except ImportError:
        logger.debug("openvino is not installed")
    except RuntimeError as exc:  # a broken install or unsupported CPU
        logger.debug("OpenVINO failed to start: %s", exc)
    return None


def cpu_has_bf16(core) -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AVX512_BF16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_description() -> dict:
    """CPU model and the flags that decide bf16 speed, from /proc/cpuinfo (Linux)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {"model": "unknown", "avx512_bf16": None, "amx": None}
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    return {"model": model.group(1).strip() if model else "unknown", "cores": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": any(f.startswith("amx") for f in flags)}


def _short(exc: BaseException) -> str:
    """One line from a converter error: OpenVINO's messages run to many lines."""
    text = " ".join(str(exc).split())
    found = re.search(r"No conversion rule found for operations: [^.]*?(?= To facilitate|$)", text)
    return (found.group(0) if found else f"{type(exc).__name__}: {text}")[:240]


def _with_precision(backbone: Backbone, precision: str) -> Backbone:
    if precision == backbone.spec.precision:
        return backbone
    spec = dataclasses.replace(backbone.spec, precision=precision)
    return dataclasses.replace(backbone, spec=spec,
                               fingerprint=variant_fingerprint(backbone.fingerprint, spec.to_dict()))


_COMPILED = {}  # (fingerprint, graph id, precision, threads) -> compiled model: the last few
_KEEP = 2


def _compile(core, backbone: Backbone, precision: str, threads: int):
    """Convert and compile; returns a callable float32 (b, s, s, 3) -> (b, d) numpy.

    Equal fingerprints mean equal features, so a backbone embedded again in
    this process (a second ``embed`` call) reuses its compiled model.
    """
    key = (backbone.fingerprint, id(backbone.graph_fn), precision, threads)
    if key not in _COMPILED:
        _COMPILED[key] = _convert(core, backbone, precision, threads)
        while len(_COMPILED) > _KEEP:
            del _COMPILED[next(iter(_COMPILED))]
    request = _COMPILED[key].create_infer_request()

    def fn(x):
        request.infer([np.asarray(x, np.float32)])
        return request.get_output_tensor(0).data.copy()
    return fn


def _convert(core, backbone: Backbone, precision: str, threads: int):
    import openvino as ov
    source = backbone.graph_fn if backbone.graph_fn is not None else backbone.model
    if source is None:
        raise ValueError("the backbone has no TensorFlow graph or model to convert")
    root_level = logging.getLogger().level
    try:  # share_weights=False: the compiled model may outlive the TensorFlow objects
        model = ov.convert_model(source, share_weights=False)
    finally:  # a failed conversion raises the root logger to ERROR, silencing our notes
        logging.getLogger().setLevel(root_level)
    return core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY"})


def _sane(backbone: Backbone, fn, precision: str) -> str | None:
    """Why the compiled model's output is not trustworthy, or None: checked once at load."""
    s = backbone.spec.input_size
    probe = np.random.default_rng(0).uniform(0, 255, (2, s, s, 3)).astype(np.float32)
    got = fn(probe)
    if got.shape != (2, backbone.spec.feature_dim) or not np.isfinite(got).all():
        return f"its output has shape {got.shape} or non-finite values"
    if precision == "f32":
        ref = np.asarray(backbone.fn(probe))
        diff = float(np.abs(got - ref).max())
        if diff > PARITY_RTOL * max(float(np.abs(ref).max()), 1e-30):
            return f"its features differ from TensorFlow's by {diff:.3g}"
    return None


def _decline(runtime: str, precision: str, backbone: Backbone, why: str) -> Backbone:
    """OpenVINO cannot run this backbone: an error when asked for, else TensorFlow with a note."""
    if runtime == "openvino" or precision == "bf16":
        asked = "runtime=openvino" if runtime == "openvino" else "precision=bf16"
        raise FeatcacheError(f"{asked}: OpenVINO cannot run backbone {backbone.spec.name} ({why}); "
                             "use runtime=tensorflow with precision=f32")
    logger.warning("OpenVINO cannot run backbone %s (%s); using TensorFlow: same features, "
                   "slower", backbone.spec.name, why)
    return backbone


def use_runtime(backbone: Backbone, runtime: str = "auto", precision: str = "f32",
                threads: int | None = None) -> Backbone:
    """The same backbone with its forward pass on the chosen runtime and precision.

    Parameters
    ----------
    backbone : Backbone
        A loaded backbone (:func:`featcache.get_backbone`).
    runtime : {"auto", "tensorflow", "openvino"}
        ``auto`` uses OpenVINO when it is installed, has a CPU device and converts
        the backbone with features equal to TensorFlow's; otherwise TensorFlow.
    precision : {"f32", "bf16"}
        ``bf16`` needs OpenVINO and a CPU with bf16 (AVX512_BF16 or AMX); its
        features get their own cache entry.
    threads : int, optional
        OpenVINO inference threads (default: see :func:`thread_split`).

    Returns
    -------
    Backbone
        With ``runtime`` set to the engine actually used; ``fn`` returns numpy.
    """
    check_runtime(runtime, precision)
    if backbone.runtime == "openvino" and backbone.spec.precision == precision:
        return backbone  # already converted
    if runtime == "tensorflow":
        return backbone
    core = openvino_core()
    if core is None:
        if runtime == "auto":
            logger.info("OpenVINO is not available; embedding with TensorFlow")
            return backbone
        raise FeatcacheError("runtime=openvino needs OpenVINO with a CPU device: pip install "
                             "openvino, or use runtime=tensorflow")
    try:
        fn = _compile(core, backbone, precision, threads or thread_split()[0])
    except Exception as exc:  # the converter raises many types (OpConversionFailure, ...)
        logger.debug("OpenVINO conversion of %s", backbone.spec.name, exc_info=True)
        return _decline(runtime, precision, backbone, f"conversion failed: {_short(exc)}")
    why = _sane(backbone, fn, precision)
    if why:
        _COMPILED.clear()  # never reuse a model that failed the check
        return _decline(runtime, precision, backbone, why)
    return dataclasses.replace(_with_precision(backbone, precision), fn=fn, runtime="openvino")
