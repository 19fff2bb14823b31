"""Benchmarks behind `qinco-bench`: speed (speed.py) and rate-distortion (rd.py) against faiss.

faiss is imported only here and only when a benchmark runs (the optional `bench` extra).
"""
