"""kill -9 at random moments and at named fault points (issue 15, item 1).

`python -m faults.kill9 --kills N` runs the real daemon under load, kills it
over and over, and checks the store, the cloud and the strikes after each
restart; README.md says what is checked and how.
"""
