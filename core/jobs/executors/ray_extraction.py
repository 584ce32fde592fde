"""Feature extraction of a large dataset split across a Ray cluster's workers, into the one cache.

Tasks by shard: each task builds the frozen base once on its node and runs
core.features.extraction.extract_views on its slice of the photos, which writes every vector
to the feature cache in the shared studio home. Nothing travels back but counts, so a later
run anywhere (the cluster or one machine) reads the cache with no misses. Chosen over Ray Data
map_batches: the cache files are the output, so the studio needs no Arrow dataset, and a shard
whose photos are already cached costs only reads (docs/benchmarks.md has the measurements).
Shards ask for a CPU only, never for the custom resources that pin a job to some nodes: the
training task that spreads its extraction holds those while it waits for its shards.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from core.config import TrainConfig
from core.jobs.executors import home_check
from core.jobs.executors.ray_node import node_facts

logger = logging.getLogger(__name__)

# A training on the cluster spreads its extraction over the workers from this many photos
# (below it, starting a task per node costs more than it saves: docs/benchmarks.md);
# $TL_STUDIO_RAY_SPREAD_MIN_PHOTOS changes it.
SPREAD_MIN_PHOTOS = 1000
SPREAD_MIN_ENV_VAR = "TL_STUDIO_RAY_SPREAD_MIN_PHOTOS"


def spread_min_photos() -> int:
    """The smallest split whose extraction is spread over the cluster."""
    try:
        return int(os.environ.get(SPREAD_MIN_ENV_VAR, SPREAD_MIN_PHOTOS))
    except ValueError:
        logger.warning("$%s is not a whole number; using %d", SPREAD_MIN_ENV_VAR,
                       SPREAD_MIN_PHOTOS)
        return SPREAD_MIN_PHOTOS


@dataclass(frozen=True)
class ClusterExtraction:
    """What one extraction over the cluster did.

    Attributes:
        shards: Per shard: node_id, node_address, images, hits, misses, seconds.
        seconds: Wall time from the first task submitted to the last one done.
    """

    shards: tuple[dict[str, Any], ...]
    seconds: float

    @property
    def nodes(self) -> set[str]:
        """Ids of the nodes that ran a shard."""
        return {str(s["node_id"]) for s in self.shards}

    @property
    def misses(self) -> int:
        """Vectors computed (not found in the cache) over all shards."""
        return sum(int(s["misses"]) for s in self.shards)


@ray.remote(max_retries=1)
def _extract_shard(config: dict[str, Any], paths: list[str], shas: list[str], home: str,
                   views: list[int], batch_size: int, token: str) -> dict[str, Any]:
    """Runs on a node: the base once, then its photos into the shared feature cache."""
    from core.features import backbones
    from core.features import extraction as features
    from core.features import weights as base_weights

    facts = node_facts()
    home_check.verify(home, token, facts)
    cfg = TrainConfig.from_dict(config)
    spec = backbones.get_spec(cfg.backbone, hub_handle=cfg.hub_handle,
                              hub_input_size=cfg.hub_input_size)
    resolved = base_weights.resolve_weights(spec, cfg.weights, seed=cfg.seed,
                                            hub_handle=cfg.hub_handle)
    extractor = features.make_extractor(spec, resolved, home=home, defer_backend=True)
    _, stats = features.extract_views(extractor, paths, shas, home=home, views=views,
                                      batch_size=batch_size)
    return {"node_id": facts["node_id"], "node_address": facts["node_address"],
            "images": len(paths), "hits": stats.hits, "misses": stats.misses,
            "seconds": round(stats.seconds, 3)}


def spread_extraction(config: TrainConfig, paths: Sequence[str | Path], sha256s: Sequence[str],
                      *, home: str | Path, token: str, views: Sequence[int] = (0,),
                      shards: int | None = None, batch_size: int = 32) -> ClusterExtraction:
    """RayExecutor.extract_features's work from a connected process (the server or a job's task).

    Args:
        token: The home check token the server wrote (home_check.write_check).
        (the others as in RayExecutor.extract_features)
    """
    paths, shas = [str(p) for p in paths], [str(s) for s in sha256s]
    if len(paths) != len(shas):
        raise ValueError("paths and sha256s must have the same length")
    count = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    count = max(1, min(count, len(paths)))
    started = time.monotonic()
    refs = []
    for i in range(count):
        lo, hi = len(paths) * i // count, len(paths) * (i + 1) // count
        refs.append(_extract_shard.options(
            scheduling_strategy="SPREAD").remote(
            config.to_dict(), paths[lo:hi], shas[lo:hi], str(home),
            [int(v) for v in views], int(batch_size), token))
    try:
        results = ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, BaseException) else exc) from None
    seconds = time.monotonic() - started
    logger.info("extracted %d photos in %d shards on %d nodes in %.1f s", len(paths), count,
                len({r["node_id"] for r in results}), seconds)
    return ClusterExtraction(tuple(results), seconds)


def spread_training_extraction(kwargs: dict[str, Any], token: str) -> ClusterExtraction | None:
    """Before a training task runs, fills the cache for its photos across the cluster.

    Only for a split of spread_min_photos() or more photos on a cluster with more than one CPU;
    the training then reads every vector from the cache. The views are those the training
    asks for (core.training.pipeline: augmented views of the training photos, and of the
    validation photos when the head is searched).

    Returns:
        What was done, or None when the extraction is left to the training itself.
    """
    split = kwargs.get("split_df")
    config = kwargs.get("config") or TrainConfig()
    if not isinstance(split, pd.DataFrame) or len(split) < spread_min_photos() \
            or ray.cluster_resources().get("CPU", 0) < 2:
        return None
    home = kwargs["home"]
    views_train = config.augment_views if config.augments else 0
    views_val = views_train if config.head == "search" else 0
    done = None
    for part, top_view in (("train", views_train), ("val", views_val), ("test", 0)):
        rows = split[split["split"] == part]
        if len(rows):
            done = spread_extraction(config, rows["path"], rows["sha256"], home=home,
                                     token=token, views=range(top_view + 1))
    return done
