# Input functions of the backbone rules (rules/backbone.smk): the flow stream reads flow shards.


def finetune_flow_input(wildcards):
    """The train split's flow shards, for the flow stream only."""
    if wildcards.stream != "flow":
        return []
    return shard_paths(results("flow/{split}/shard-{k}.h5"), splits=["train"])


def features_flow_input(wildcards):
    """The shard's flow, for the flow stream only."""
    if wildcards.stream != "flow":
        return []
    return [results(f"flow/{wildcards.split}/shard-{wildcards.k}.h5")]
