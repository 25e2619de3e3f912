"""Write ``v3-*.rec`` (see README.md): run with an fw_rollouts whose packed logprobs hold no alternative ids."""

import pathlib
import sys

import _helpers
import _shapes
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts._record import FORMAT_VERSION, encode_record
from fw_rollouts._templates import split_think

if FORMAT_VERSION != 3:
    raise SystemExit(f"this fw_rollouts writes record format {FORMAT_VERSION}, not 3")
out = pathlib.Path(sys.argv[1])
for name, build in _shapes.SHAPES.items():
    lp = build()
    data = encode_record(_shapes.sample(lp), f"key {name} True")
    (out / f"v3-{name.replace(' ', '_')}.rec").write_bytes(data)
# A content-format reply (its alternatives carry token ids, which this version did not keep), parsed as it was.
body = _helpers.load_json_fixture("fireworks/completion-content-logprobs-echo.json")
spec = ResponseSpec(prompt=_helpers.R1_PROMPT, echo=True, logprobs=True, split_reasoning=split_think)
sample = parse_completion(body, spec, [0])[0]
(out / "v3-content-echo.rec").write_bytes(encode_record(sample, "key content echo"))
