"""Long-tail learning: logit adjustment (Menon et al., ICLR 2021) read as mutual information
(kexue.fm 2020-07-19), and class weighting vs focal / dice / logit-adjusted losses (kexue.fm 2020-08-31).
"""
