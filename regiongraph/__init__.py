"""Space-Time Region Graphs (Wang & Gupta, ECCV 2018) on Something-Something v1.

The package holds every piece of logic the Snakemake workflow runs; ``scripts/`` only glue
the workflow's ``snakemake`` object to these functions.
"""

__version__ = "0.1.0"
