"""Feature index and browser data: top contexts, histograms, logit effects, map (issue #4)."""
