"""Rule train_model: train (or resume) one GCN head on one feature stream (regiongraph.train)."""

from pathlib import Path

import torch

from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file
from regiongraph.train.loop import TrainSettings, train_model
from regiongraph.train.metrics import read_labels

log = log_to_file(snakemake.log[0])
claim_gpu_slot(snakemake.params.device)  # one GPU per job when several jobs share a machine
torch.set_num_threads(snakemake.threads)
stream = snakemake.wildcards.stream
settings = TrainSettings(
    **snakemake.params.settings,
    model=snakemake.wildcards.model,
    stream=stream,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
)
model_path = train_model(
    settings,
    train_paths=snakemake.input.train,
    val_paths=snakemake.input.validation,
    num_classes=len(read_labels(snakemake.input.labels)),
    out_dir=Path(snakemake.output.model).parent,
    expect={**snakemake.params.expect, "stream": stream},
)
log.info("wrote %s", model_path)
