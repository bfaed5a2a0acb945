"""Rule train_model: train (or resume) every GCN head of one feature stream in one pass
(regiongraph.train.loop.train_heads)."""

from pathlib import Path

from regiongraph.features.storage import expected_settings
from regiongraph.jobs import start_job
from regiongraph.train.loop import TrainSettings, train_heads
from regiongraph.train.metrics import read_labels

params = snakemake.params
log = start_job(snakemake.log[0], params.device, snakemake.threads)
stream = snakemake.wildcards.stream
heads = [
    TrainSettings(
        **params.settings, model=model, stream=stream, seed=params.seed, device=params.device
    )
    for model in params.models
]
paths = train_heads(
    heads,
    train_paths=snakemake.input.train,
    val_paths=snakemake.input.validation,
    num_classes=len(read_labels(snakemake.input.labels)),
    out_dirs=[Path(path).parent for path in snakemake.output.models],
    expect={**expected_settings(**params.features), "stream": stream},
)
log.info("wrote %s", ", ".join(map(str, paths)))
