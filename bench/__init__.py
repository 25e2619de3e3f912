"""The fw_rollouts benchmark: ``python -m bench [--smoke | --quick] [--json PATH] [--profile]``.

See docs/performance.md for what each row measures and the figures recorded on the project's machine.
"""
