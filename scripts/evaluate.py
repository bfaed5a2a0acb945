"""Rule evaluate_model: metrics, pictures and predictions of one model (late fusion of streams)."""

import torch

from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file
from regiongraph.train.evaluate import EvaluationInputs, evaluate_model

log_to_file(snakemake.log[0])
claim_gpu_slot(snakemake.params.device)  # one GPU per job when several jobs share a machine
torch.set_num_threads(snakemake.threads)
streams = snakemake.params.streams
inputs = snakemake.input
evaluate_model(
    EvaluationInputs(
        model_paths={stream: inputs[f"model_{stream}"] for stream in streams},
        val_shards={stream: list(inputs[f"validation_{stream}"]) for stream in streams},
        test_shards={stream: list(inputs[f"test_{stream}"]) for stream in streams},
        train_logs={stream: inputs[f"train_log_{stream}"] for stream in streams},
        labels_path=inputs.labels,
        listed_path=inputs.listed,
        train_index_path=inputs.train_index,
        dropped_paths=[inputs.dropped],
    ),
    outputs=dict(snakemake.output.items()),
    model_name=snakemake.wildcards.model,
    expect={stream: {**snakemake.params.expect, "stream": stream} for stream in streams},
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
)
