"""Rule evaluate_model: metrics, pictures and predictions of one model (late fusion of streams)."""

from regiongraph.features.storage import expected_settings
from regiongraph.jobs import start_job
from regiongraph.train.evaluate import EvaluationInputs, evaluate_model

start_job(snakemake.log[0], snakemake.params.device, snakemake.threads)
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
    arch=snakemake.params.arch,
    data=snakemake.params.data,
    # validation and test shards: every view of the test protocol
    expect={
        stream: {
            **expected_settings(**snakemake.params.features),
            "stream": stream,
            "views": snakemake.params.views,
            "crops": snakemake.params.crops,
        }
        for stream in streams
    },
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
)
