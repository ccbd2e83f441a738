"""Downstream evaluation of SAEs, as the Sampled-SAE paper (arXiv 2508.21324) measures its l
trade-off: SAEBench-style sparse probing (``probing``), feature absorption (``absorption``) and the
activation lottery of BatchTopK (``lottery``); ``job`` stores them with an SAE and in a sweep's table."""
