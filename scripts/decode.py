"""Rule decode: every SSv2 webm into a frame folder (regiongraph.dataset.video); the videos
that do not decode are listed with their reason."""

import json
from dataclasses import asdict

from regiongraph.dataset.video import DecodeSettings, decode_videos, dropped_table
from regiongraph.io import write_csv, write_json
from regiongraph.jobs import start_job

log = start_job(snakemake.log[0])
params = snakemake.params
settings = DecodeSettings(short_side=params.short_side, jpeg_quality=params.jpeg_quality)
# frames decoded from other parts (another download) are decoded again
with open(snakemake.input.manifest) as handle:
    source = [part["sha256"] for part in json.load(handle)["parts"]]
result = decode_videos(
    params.videos, params.frames, settings, workers=snakemake.threads, source=source
)
write_csv(snakemake.output.dropped, dropped_table(result))
write_json(
    snakemake.output.summary,
    {
        "videos": result.videos,
        "decoded_now": result.decoded,
        "frames_now": result.frames,
        "dropped": len(result.dropped),
        "settings": asdict(settings),
    },
)
log.info("decode: %d videos, %d dropped", result.videos, len(result.dropped))
