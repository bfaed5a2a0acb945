"""Rule gcn_metrics_table: every model's metrics.json as one table for the report."""

from regiongraph.jobs import start_job
from regiongraph.train.metrics import gather_metrics

log = start_job(snakemake.log[0])
table = gather_metrics(
    dict(zip(snakemake.params.models, snakemake.input, strict=True)), snakemake.output[0]
)
log.info("metrics of %d models:\n%s", len(table), table.to_string(index=False))
