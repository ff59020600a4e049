"""WEISSI, weight-scale-shift-invariant regularisation (Liu et al. 2020), against L2, weight decay
and AdamW (kexue.fm 2020-08-14).
"""
