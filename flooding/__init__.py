"""Flooding (Ishida et al., ICML 2020) and its reading as a gradient-norm penalty (kexue.fm 2020-07-31).
"""
