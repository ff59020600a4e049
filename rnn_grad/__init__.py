"""Gradient vanishing and exploding in simple RNN, LSTM and GRU (kexue.fm 2020-11-13; Pascanu,
Mikolov & Bengio 2013), measured with autodiff and confirmed by training.
"""
