#!/usr/bin/env bash
# The synthetic benchmark end to end, on ./openmind (make demo): the downstream tasks, an MAE
# pretraining on the synthetic collection, then every checkpoint x schedule x task fine-tuned
# and the table written to OUT/benchmark.{md,csv,png}. Run again to continue where it stopped.
#
#   scripts/benchmark_synthetic.sh              # SIZE=full: ResEnc-L, 1 mm, 160^3 (a GPU, days)
#   SIZE=small scripts/benchmark_synthetic.sh   # a tiny ResEnc at 3 mm, 32^3: minutes on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-full}
bin=${BIN:-.venv/bin}
out=${OUT:-runs/synthetic-benchmark-$size}
test -d openmind || { echo "no ./openmind: run make demo first" >&2; exit 1; }
pretrain=(--set "train.out=$out/pretrain")
bench=(--set "checkpoints.mae=$out/pretrain/final.pt"
       --set "datasets.lesions.path=$out/downstream/lesions"
       --set "datasets.presence.path=$out/downstream/presence/labels.csv")
if [ "$size" = small ]; then
    voxel=3
    pretrain+=(--set "model.features_per_stage=[8, 16, 32, 32]" --set "model.blocks_per_stage=[1, 1, 1, 1]"
               --set "train.patch_size=[32, 32, 32]" --set data.spacing=3 --set data.workers=1
               --set train.epochs=4 --set optim.name=adamw --set optim.lr=3e-3 --set train.amp=none)
    # AdamW at 3e-3 for every run: the paper's SGD rates need far more than these 300 steps.
    bench+=(--set base.schedule.epochs=20 --set base.train.steps_per_epoch=15
            --set base.optim.name=adamw --set base.optim.lr=3e-3
            --set "base.train.patch_size=[32, 32, 32]" --set base.train.workers=1
            --set datasets.lesions.spacing=3 --set datasets.presence.spacing=3
            --set "datasets.presence.train.patch_size=[48, 48, 48]")  # deep white matter at 3 mm
else
    voxel=1
    pretrain+=(--set "train.epochs=${PRETRAIN_EPOCHS:-100}")
fi
test -f "$out/downstream/lesions/dataset.json" ||
    "$bin/openmind-ssl" synthetic-tasks --out "$out/downstream" --cases 24 --voxel-mm "$voxel"
"$bin/openmind-ssl" pretrain --config scripts/pretrain_resenc_l_mae.yaml "${pretrain[@]}"
"$bin/openmind-ssl" benchmark --suite scripts/benchmark_synthetic.yaml --out "$out" "${bench[@]}"
