#!/usr/bin/env bash
# Multi-GPU / multi-node launch of rsd-train with torchrun (DDP: NCCL on GPUs, gloo on CPUs).
#
#   CONFIG=train/configs/rsd_realsr_x4.yaml NPROC=4 train/scripts/torchrun_train.sh [--resume PATH] [key=value ...]
#
# Multi-node: run on every node with the same MASTER_ADDR/MASTER_PORT, NNODES, and NODE_RANK=0..NNODES-1.
# optim.batch_size is the global batch: it must be a multiple of optim.micro_batch x (NPROC x NNODES);
# the remaining factor is gradient accumulation. CPU-only smoke test: NPROC=2 with device=cpu.
set -euo pipefail
CONFIG=${CONFIG:-train/configs/rsd_realsr_x4.yaml}
NPROC=${NPROC:-4}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
# keep CPU threads per process sane (torchrun otherwise defaults OMP_NUM_THREADS to 1 with a warning)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec torchrun --nproc_per_node="$NPROC" --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  -m rsd_deploy.cli.train --config "$CONFIG" "$@"
