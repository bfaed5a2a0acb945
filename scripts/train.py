"""Rule train_model: train (or resume) one GCN head on one feature stream (regiongraph.train)."""

from pathlib import Path

from regiongraph.features.storage import expected_settings
from regiongraph.jobs import start_job
from regiongraph.train.loop import TrainSettings, train_model
from regiongraph.train.metrics import read_labels

log = start_job(snakemake.log[0], snakemake.params.device, snakemake.threads)
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
    expect={**expected_settings(**snakemake.params.features), "stream": stream},
)
log.info("wrote %s", model_path)
