"""Plot the five fine-tuning schedules' learning rates (docs/images/finetune-schedules.png).

One panel per schedule, ResEnc-L's peak rate, the rate of every optimizer step; epochs where
only the decoder trains are shaded and drawn dashed, so the stretch where the encoder stays
frozen is visible at a glance.

    python scripts/plot_schedules.py [--epochs 150] [--steps 250] [--out PNG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from openmind_ssl.finetune.schedules import GROUPS, SCHEDULES, TRANSFER_LR, make_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--steps", type=int, default=250, help="Optimizer steps per epoch.")
    parser.add_argument("--out", type=Path, default=Path("docs/images/finetune-schedules.png"))
    args = parser.parse_args()

    import matplotlib  # noqa: PLC0415 (the backend must be chosen before pyplot loads)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lr = TRANSFER_LR["resenc_l"]
    steps = args.steps
    fig, axes = plt.subplots(len(SCHEDULES), 1, figsize=(7, 8), sharex=True, sharey=True)
    for ax, name in zip(axes, SCHEDULES, strict=True):
        schedule = make_schedule(name, epochs=args.epochs, lr=lr)
        for phase in schedule.phases:
            decoder_only = phase.trains != frozenset(GROUPS)
            times = [e + s / steps for e in range(phase.start, phase.end) for s in range(steps)]
            rates = [
                schedule.learning_rate(e, s, steps)
                for e in range(phase.start, phase.end)
                for s in range(steps)
            ]
            ax.plot(
                times,
                rates,
                color="tab:orange" if decoder_only else "tab:blue",
                linestyle="--" if decoder_only else "-",
                linewidth=1.5,
            )
            if decoder_only:
                ax.axvspan(phase.start, phase.end, color="tab:orange", alpha=0.12, linewidth=0)
        for boundary in schedule.boundaries()[1:]:
            ax.axvline(boundary, color="0.6", linewidth=0.6, linestyle=":")
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_ylabel("lr")
        ax.set_xlim(0, args.epochs)
        ax.set_ylim(0, lr * 1.08)
        ax.grid(alpha=0.25)
    axes[-1].set_xlabel("epoch")
    axes[0].plot([], [], color="tab:blue", label="whole network")
    axes[0].plot([], [], color="tab:orange", linestyle="--", label="decoder only (encoder frozen)")
    axes[0].legend(loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(f"Fine-tuning schedules: ResEnc-L, peak lr {lr:g}, {args.epochs} epochs")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
