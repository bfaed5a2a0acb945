# How the workflow meets the machinery that runs it: the --use-conda environments and SLURM.
# Light modules only (deploy, slurm), like common.smk.
from regiongraph.deploy import export_workflow_folder
from regiongraph.slurm import check_slurm_run

# envs/*.post-deploy.sh install the package from here into each --use-conda environment:
# Snakemake runs them as copies under .snakemake/conda/, where no relative path leads back.
export_workflow_folder(workflow.basedir)


# With the SLURM executor: a job no node can run, sacct without accounting, or array jobs that
# the plugin would never submit stop the run here, before anything is submitted.
onstart:
    try:
        check_slurm_run(workflow)
    except (ValueError, RuntimeError) as error:
        raise WorkflowError(str(error)) from None
