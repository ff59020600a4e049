"""SPACES (kexue.fm 2021-01-01, bojone/SPACES): extract-then-generate long-text summarisation on
CAIL2020, with BIO copy decoding and Sparse Softmax.
"""
