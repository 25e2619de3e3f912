"""Write ``v2-*.rec`` (see README.md): run with an fw_rollouts that writes record format 2 first on the path."""

import pathlib
import sys

import _shapes
from fw_rollouts._record import FORMAT_VERSION, encode_record

if FORMAT_VERSION != 2:  # type: ignore[comparison-overlap]  # run with the older fw_rollouts
    raise SystemExit(f"this fw_rollouts writes record format {FORMAT_VERSION}, not 2")
out = pathlib.Path(sys.argv[1])
for name, build in _shapes.SHAPES.items():
    lp = build()
    for full in (True,) if name != "model-like echo" else (True, False):
        data = encode_record(_shapes.sample(lp, content_is_full=full), f"key {name} {full}")
        (out / f"v2-{name.replace(' ', '_')}{'' if full else '-reasoning'}.rec").write_bytes(data)
(out / "v2-no_logprobs.rec").write_bytes(encode_record(_shapes.sample(None), "key no logprobs"))
