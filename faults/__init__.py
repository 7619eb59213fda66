"""Fault campaigns: the gateway's promises checked under kill -9, power cuts,
disk faults and fuzzed input. Each campaign has a short form inside the test
suite and a long form run by `python -m faults.<campaign>`; docs/reliability.md
has the figures and the commands."""
