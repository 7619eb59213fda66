"""Soak (issue 15, item 8): the daemon under sustained load for a long time.

64 simulated readers in 4 groups, badges at a steady rate with bursts, MQTT
traffic on the topics the gateway subscribes to, a cloud outage compressed in
time, SIGKILL and restart every few minutes; `harness.Soak` runs it and
measures, `python -m faults.soak` prints the RESULT line (README.md).
"""
