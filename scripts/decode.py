"""Rule decode: every SSv2 webm into a frame folder (regiongraph.dataset.video); the videos
that do not decode are listed with their reason."""

from dataclasses import asdict

from regiongraph.dataset.video import DecodeSettings, decode_videos, dropped_table
from regiongraph.io import write_csv, write_json
from regiongraph.jobs import start_job

log = start_job(snakemake.log[0])
params = snakemake.params
settings = DecodeSettings(short_side=params.short_side, jpeg_quality=params.jpeg_quality)
result = decode_videos(params.videos, params.frames, settings, workers=snakemake.threads)
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
