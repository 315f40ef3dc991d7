#!/usr/bin/env bash
# Launch a pretraining run with torchrun: one process per GPU on this node, or several nodes.
#
#   scripts/pretrain.sh scripts/pretrain_resenc_l_mae.yaml                 # every GPU here
#   GPUS=4 scripts/pretrain.sh scripts/pretrain_primus_m_mae_anon.yaml --set data.max_iqs=3
#   NODES=2 NODE_RANK=0 MASTER=host0:29500 scripts/pretrain.sh CONFIG      # on each node
#
# Run again after a stop (SIGTERM/SIGUSR1, a time limit) and it resumes from OUT/latest.pt.
set -euo pipefail
config=${1:?usage: scripts/pretrain.sh CONFIG.yaml [--set section.key=value ...]}
shift
gpus=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
gpus=$(( gpus > 0 ? gpus : 1 ))
nodes=${NODES:-1}
if [ "$nodes" -gt 1 ]; then
    rendezvous=(--nnodes "$nodes" --node-rank "${NODE_RANK:?set NODE_RANK}"
                --rdzv-backend c10d --rdzv-endpoint "${MASTER:?set MASTER=host:port}")
else
    rendezvous=(--standalone)
fi
exec torchrun "${rendezvous[@]}" --nproc-per-node "$gpus" \
    -m openmind_ssl.cli pretrain --config "$config" "$@"
