"""Which accelerator a worker uses: ``CUDA_VISIBLE_DEVICES`` as Ray or the shell set it.

One shard per GPU works the same whether Ray starts the workers (with
``gpus_per_worker=1`` Ray gives each actor its own ``CUDA_VISIBLE_DEVICES``) or
the shell does (``CUDA_VISIBLE_DEVICES=i featcache embed ... --shard i/N``).
TensorFlow then numbers the one visible GPU ``/GPU:0``.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def visible_devices(env=None) -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` lets a process see: ids, ``[]`` for none, None if unset."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    # CUDA stops at the first invalid id; "-1" is the usual way to hide every GPU
    valid = []
    for v in ids:
        if v.startswith("-"):
            break
        valid.append(v)
    return valid


def tensorflow_gpus() -> int:
    """How many GPUs TensorFlow sees in this process."""
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU"))


def describe_devices(env=None, tf_gpus: int | None = None) -> str:
    """One line saying what this process embeds on, for logs and summaries.

    Parameters
    ----------
    env : mapping, optional
        The environment to read (default ``os.environ``).
    tf_gpus : int, optional
        GPUs TensorFlow sees (default: ask TensorFlow).
    """
    ids = visible_devices(env)
    n = tensorflow_gpus() if tf_gpus is None else tf_gpus
    if ids is None:
        return f"{n} GPU(s), all of this machine's (CUDA_VISIBLE_DEVICES unset)" if n else "CPU"
    if not ids:
        return "CPU (CUDA_VISIBLE_DEVICES hides every GPU)"
    shown = f"CUDA_VISIBLE_DEVICES={','.join(ids)}"
    if not n:
        return f"CPU: {shown} but TensorFlow sees no GPU (a CPU-only TensorFlow build, or no CUDA?)"
    return f"GPU {','.join(ids)} ({shown}; TensorFlow sees {n} as /GPU:0..{n - 1})"


def check_assigned(assigned, env=None, tf_gpus: int | None = None) -> str:
    """Describe the devices, warning when the GPUs a scheduler assigned are not what TF sees.

    ``assigned`` is the list of GPU ids (``ray.get_gpu_ids()``); empty for a CPU worker.
    """
    line = describe_devices(env, tf_gpus)
    ids = visible_devices(env)
    if assigned and (ids is None or sorted(map(str, assigned)) != sorted(ids)):
        log.warning("this worker was assigned GPU(s) %s but CUDA_VISIBLE_DEVICES is %s: it may "
                    "share a GPU with another worker", ",".join(map(str, assigned)),
                    "unset" if ids is None else ",".join(ids) or "empty")
    elif assigned and line.startswith("CPU"):
        log.warning("this worker was assigned GPU(s) %s, but embeds on the CPU: %s",
                    ",".join(map(str, assigned)), line)
    return line
