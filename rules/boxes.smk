# Stage 5: object boxes on the box frames of each clip, one job per shard.
# The backend decides the conda env and whether the job asks for a GPU.

BOXES = config["boxes"]
BOXES_DETECTOR = BOXES["backend"] != "annotations"
BOXES_ENV = {
    "annotations": "../envs/cv.yaml",
    "torchvision": "../envs/torch.yaml",
    "detectron2": "../envs/detectron2.yaml",
}[BOXES["backend"]]

if BOXES["backend"] == "annotations" and box_annotations_path() is None:
    raise ValueError(
        "boxes.backend is annotations but dataset.box_annotations is not set "
        "(and dataset.source is not toy): give a Something-Else style JSON or choose a detector"
    )


# The box annotation file, or the detector's weights when they are a local file: reruns when
# either changes (a URL is downloaded by the job itself, into results/weights/downloads).
if not BOXES_DETECTOR:
    BOXES_INPUTS = [box_annotations_path()]
elif BOXES["weights"] and "://" not in BOXES["weights"]:
    BOXES_INPUTS = [BOXES["weights"]]
else:
    BOXES_INPUTS = []


rule boxes_shard:
    input:
        index=results("index/{split}.parquet"),
        extra=BOXES_INPUTS,
    output:
        results("boxes/{split}/shard-{k}.h5"),
    log:
        logs("boxes/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("boxes/{split}/shard-{k}.tsv")
    conda:
        BOXES_ENV
    threads: 2 if BOXES_DETECTOR else 1
    resources:
        mem_mb=8000 if BOXES_DETECTOR else 2000,
        runtime=240 if BOXES_DETECTOR else 30,
        gpu=1 if BOXES_DETECTOR and config["device"] != "cpu" else 0,
    params:
        settings=BOXES,
        num_frames=config["backbone"]["num_frames"],
        frame_stride=config["backbone"]["frame_stride"],
        sampling=config["backbone"]["sampling"],
        device=config["device"],
        weights_cache=results("weights/downloads"),
    script:
        "../scripts/boxes.py"


rule boxes:
    input:
        shard_paths(results("boxes/{split}/shard-{k}.h5")),


register_target("boxes", rules.boxes.input)
