"""Rule gcn_metrics_table: every model's metrics.json as one table for the report."""

from regiongraph.runlog import log_to_file
from regiongraph.train.metrics import gather_metrics

log = log_to_file(snakemake.log[0])
table = gather_metrics(
    dict(zip(snakemake.params.models, snakemake.input, strict=True)), snakemake.output[0]
)
log.info("metrics of %d models:\n%s", len(table), table.to_string(index=False))
