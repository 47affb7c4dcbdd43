"""A typical wandb training script; only the import differs (tests/e2e/test_compat_wandb.py).

Run 1 trains for --epochs epochs of --steps-per-epoch steps (train/* every step, val/*
once per epoch as its own step), logs a table and a histogram, overrides a summary value
and finishes. Run 2 is a ``with wandb.init(...)`` block (``--fail``: an exception escapes
it, so the run ends failed and the script exits 1).
"""

import argparse
import time

import runstream.compat.wandb as wandb

VAL_LOSS = [0.9, 0.5, 0.7, 0.3, 0.4]
VAL_ACC = [0.1, 0.6, 0.4, 0.8, 0.7]


def train_loss(global_step: int) -> float:
    return 1.0 / (1 + global_step)


p = argparse.ArgumentParser()
p.add_argument("--run-id", required=True)
p.add_argument("--epochs", type=int, default=len(VAL_LOSS))
p.add_argument("--steps-per-epoch", type=int, default=20)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--sleep-per-step", type=float, default=0.0)
p.add_argument("--fail", action="store_true")
args = p.parse_args()

wandb.login()
run = wandb.init(
    id=args.run_id, name="wandb-style", notes="a wandb script", tags=["compat", "e2e"],
    group="compat-group", job_type="train", save_code=True,
    config={"lr": args.lr, "epochs": args.epochs, "model": {"layers": 3, "act": "relu"}},
    settings=wandb.Settings(start_method="thread", console="off"),
)
wandb.config.update(args, allow_val_change=True)      # argparse: adds the other flags
wandb.config.optimizer = "adam"
wandb.config.update({"lr": args.lr * 2}, allow_val_change=True)
wandb.define_metric("epoch")
wandb.define_metric("val/*", step_metric="epoch")
wandb.define_metric("val/loss", summary="min")
wandb.define_metric("val/acc", summary="max,last")    # wandb multi-mode: first one used
wandb.watch(object(), log="all")

global_step = 0
for epoch in range(args.epochs):
    for _ in range(args.steps_per_epoch):
        wandb.log({"train/loss": train_loss(global_step), "train/lr": wandb.config.lr})
        global_step += 1
        if args.sleep_per_step:
            time.sleep(args.sleep_per_step)
    wandb.log({"val/loss": VAL_LOSS[epoch], "val/acc": VAL_ACC[epoch], "epoch": epoch})

table = wandb.Table(columns=["id", "prediction"])
for i in range(3):
    table.add_data(i, f"class-{i % 2}")
wandb.log({"predictions": table, "weights": wandb.Histogram([0.1, 0.2, 0.2, 0.9], num_bins=4)})
wandb.run.summary["best_epoch"] = VAL_LOSS.index(min(VAL_LOSS[:args.epochs]))
wandb.summary["train/loss"] = -1.0                     # an override of a logged key
print(f"RUN1 {wandb.run.id} step={wandb.run.step}", flush=True)
wandb.finish()
assert wandb.run is None

with wandb.init(id=f"{args.run_id}-eval", name="eval", job_type="eval",
                config={"checkpoint": "best"}) as run2:
    for i in range(5):
        run2.log({"eval/score": i / 10})
    run2.summary["eval/best"] = 0.4
    if args.fail:
        raise RuntimeError("evaluation failed")
print("DONE", flush=True)
