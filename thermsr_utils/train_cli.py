"""Command line: train one recipe exactly as its notebook (03 for v1, 05 for v2) configures it.

``python -m thermsr_utils.train_cli --profile paper --recipe v1`` trains from the profile's manifest into its
checkpoints folder; start it with ``torchrun`` to use several GPUs (DistributedDataParallel, rank 0 writes).
"""
from __future__ import annotations

import torch

from . import accel

# ---------------------------------------------------------------------------------------------
# Command line: train one recipe as its notebook configures it (under torchrun for several GPUs)
# ---------------------------------------------------------------------------------------------
RECIPE_NOTEBOOKS = {"v1": "03_v1_finetune", "v2": "05_v2_finetune"}


def notebook_parameters(recipe: str, profile: str, overrides: dict | None = None) -> dict:
    """The parameters notebook 03 (v1) or 05 (v2) would run with: its cell's literals, the profile, overrides."""
    from . import run

    if recipe not in RECIPE_NOTEBOOKS:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPE_NOTEBOOKS)}")
    nbs = run.select(run.discover(), only=[RECIPE_NOTEBOOKS[recipe]])
    resolved = run.resolve_parameters(nbs, profile, dict(overrides or {}))
    return {**nbs[0].parameters, **resolved[nbs[0].name]}


def build_run(recipe_name: str, p: dict, device: str):
    """(recipe, loss, validation metrics, LPIPS name, perceptual term name) as the recipe's notebook builds them."""
    from . import losses, metrics, train

    lpips_metric = metrics.LPIPSMetric(device=device)
    cap = p["max_steps_per_epoch"] or None
    if recipe_name == "v1":
        recipe = train.Recipe.v1(epochs=p["v1_epochs"], lr=p["v1_lr"], batch_size=p["v1_batch_size"],
                                 patch=p["v1_patch"], val_every=p["val_every"], seed=p["seed"],
                                 max_steps_per_epoch=cap)
        return recipe, losses.make_loss("l1"), lpips_metric, None
    loss_fn, term_name = losses.v2_loss(p["v2_perceptual"], lpips_metric, lpips_weight=p["lpips_weight"],
                                        fft_weight=p["fft_weight"])
    recipe = train.Recipe.v2(epochs=p["v2_epochs"], warmup_epochs=p["v2_warmup_epochs"], lr=p["v2_lr"],
                             batch_size=p["v2_batch_size"], ema_decay=p["v2_ema_decay"], val_every=p["val_every"],
                             seed=p["seed"], max_steps_per_epoch=cap)
    return recipe, loss_fn, lpips_metric, term_name


def main(argv=None) -> int:
    """Command-line entry: train v1 or v2 of a profile into its checkpoints folder (rank 0 writes)."""
    import argparse
    import contextlib
    import dataclasses

    from . import config, data, models, run, train

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

    p = notebook_parameters(args.recipe, args.profile, {k: run.parse_value(v) for k, v in args.p})
    device = config.resolve_device(p["device"])
    info = accel.init_distributed(torch.device(device).type)
    device = str(accel.rank_device(device, info))
    paths = config.setup(args.profile, p["seed"]) if info.is_main else config.run_paths(args.profile)
    if not info.is_main:
        config.seed_everything(p["seed"])
    recipe, loss_fn, lpips_metric, term_name = build_run(args.recipe, p, device)
    recipe = dataclasses.replace(recipe, compile=args.compile,
                                 fast={"auto": None, "on": True, "off": False}[args.fast])
    records = data.load_verified_manifest(paths)["records"]
    patch, augment = (recipe.patch, False) if args.recipe == "v1" else (None, True)
    train_set, val_sets = train.datasets_from_manifest(paths.crops, records, patch=patch, augment=augment,
                                                       seed=p["seed"])
    model, init_info = models.load_model(p["backbone"], source=p["weights"], standin_dir=paths.models / "standin",
                                         device=device)
    more = {"lpips": lpips_metric.name}
    if term_name is not None:
        more["perceptual_term"] = term_name
    # rank 0 holds the artifacts folder as the notebook runner does, so no other run writes there meanwhile
    with run.run_lock(paths) if info.is_main else contextlib.nullcontext():
        result = train.fit(model, train_set, val_sets, loss_fn, recipe, paths.checkpoints / args.recipe,
                           metrics=train.default_metrics(lpips_metric), device=device, resume=p["resume"],
                           extra_meta=train.run_meta(paths.manifest, init_info, **more), progress=info.is_main)
    if info.is_main:
        print(f"kept epoch {result['best_epoch']} ({recipe.select_metric} {result['best_value']:.4g}) "
              f"-> {result['best_dir']}")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
