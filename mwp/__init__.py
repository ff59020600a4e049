"""Math word problems on Ape210K (kexue.fm 2020-10-19): a UniLM-style seq2seq model that writes the
solving expression, checked by a safe exact-arithmetic evaluator.
"""
