"""Benchmark sets from real high-frame-rate video (the `video-set` command).

Consecutive frames averaged in linear light are the photographs a longer exposure would
have taken, so one slow-motion clip of a moving object gives images of rising blur, as
the simulator's exposures do for its renders.
"""
