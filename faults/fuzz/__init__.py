"""Coverage-guided fuzzing (atheris / libFuzzer) of every parser of the gateway.

One harness per parser in `faults.fuzz.harnesses`, each calling the entry
point the gateway itself uses and allowing only that parser's documented
error types; `python -m faults.fuzz` runs them (README.md in this folder).
This package imports nothing of the gateway, so that the child process can
import the gateway's modules under atheris's instrumentation.
"""
