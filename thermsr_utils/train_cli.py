"""Command line: train one recipe exactly as its notebook (03 for v1, 05 for v2) configures it.

``python -m thermsr_utils.train_cli --profile paper --recipe v1`` trains from the profile's manifest into its
checkpoints folder; start it with ``torchrun`` to use several GPUs (DistributedDataParallel, rank 0 writes).
"""
from __future__ import annotations

import torch

from . import accel

# ---- Command line: train one recipe as its notebook configures it (under torchrun for several GPUs) ----
RECIPE_NOTEBOOKS = {"v1": "03_v1_finetune", "v2": "05_v2_finetune"}


def notebook_parameters(recipe: str, profile: str, overrides: dict | None = None) -> dict:
    """The parameters notebook 03 (v1) or 05 (v2) would run with: its cell's literals, the profile, overrides."""
    from . import notebook

    if recipe not in RECIPE_NOTEBOOKS:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPE_NOTEBOOKS)}")
    nbs = notebook.select(notebook.discover(), only=[RECIPE_NOTEBOOKS[recipe]])
    resolved = notebook.resolve_parameters(nbs, profile, dict(overrides or {}))
    return {**nbs[0].parameters, **resolved[nbs[0].name]}


def main(argv=None) -> int:
    """Command-line entry: train v1 or v2 of a profile into its checkpoints folder (rank 0 writes)."""
    import argparse
    import contextlib
    import dataclasses

    from . import config, lock, manifests, models, notebook, recipes, train

    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.train_cli",
                                 description="Train one recipe as its notebook would; start it with torchrun "
                                             "to train on several GPUs (DistributedDataParallel).")
    ap.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.PROFILE_NAMES)
    ap.add_argument("--recipe", required=True, choices=sorted(RECIPE_NOTEBOOKS))
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a parameter of the recipe's notebook (as with thermsr_utils.run)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for the training steps")
    ap.add_argument("--fast", choices=("auto", "on", "off"), default="auto",
                    help="device data pipeline + channels_last (auto: on for CUDA)")
    args = ap.parse_args(argv)

    p = notebook_parameters(args.recipe, args.profile, {k: notebook.parse_value(v) for k, v in args.p})
    device = config.resolve_device(p["device"])
    info = accel.init_distributed(torch.device(device).type)
    device = str(accel.rank_device(device, info))
    paths = config.setup(args.profile, p["seed"]) if info.is_main else config.run_paths(args.profile)
    if not info.is_main:
        config.seed_everything(p["seed"])
    records = manifests.load_verified_manifest(paths)["records"]
    built = recipes.build(args.recipe, p, paths.crops, records, device)
    recipe = dataclasses.replace(built.recipe, compile=args.compile,
                                 fast={"auto": None, "on": True, "off": False}[args.fast])
    model, init_info = models.load_model(p["backbone"], source=p["weights"], standin_dir=paths.models / "standin",
                                         device=device)
    # rank 0 holds the artifacts folder as the notebook runner does, so no other run writes there meanwhile
    try:
        with lock.run_lock(paths) if info.is_main else contextlib.nullcontext():
            result = train.fit(model, built.train_set, built.val_sets, built.loss_fn, recipe,
                               paths.checkpoints / args.recipe, metrics=train.default_metrics(built.lpips_metric),
                               device=device, resume=p["resume"], fresh=p["fresh_start"],
                               extra_meta=built.meta(paths.manifest, init_info), progress=info.is_main)
    except train.TrainingRunExists as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 1
    if info.is_main:
        print(f"kept epoch {result['best_epoch']} ({recipe.select_metric} {result['best_value']:.4g}) "
              f"-> {result['best_dir']}")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
