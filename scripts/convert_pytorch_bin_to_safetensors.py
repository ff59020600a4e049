"""Converts an HF checkpoint's pytorch_model.bin into model.safetensors (for `shared.hf_bert`).

Many Chinese BERT checkpoints (e.g. chinese_L-12_H-768_A-12 converted to HF, RoBERTa-wwm-ext) ship only
`pytorch_model.bin`.  torch is needed only to run this script (keep it out of the main venv):
  python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0 safetensors numpy
  /work/venv-torch/bin/python scripts/convert_pytorch_bin_to_safetensors.py /path/to/bert_dir
writes /path/to/bert_dir/model.safetensors (float32 numpy arrays; tied/shared tensors are copied).
"""

import argparse
import pathlib
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", help="HF model directory holding pytorch_model.bin")
    ap.add_argument("--out", default=None, help="output file (default DIRECTORY/model.safetensors)")
    args = ap.parse_args(argv)
    import torch  # only needed here
    from safetensors.numpy import save_file

    d = pathlib.Path(args.directory)
    src = d / "pytorch_model.bin"
    if not src.is_file():
        sys.exit(f"error: {src} not found")
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    arrays = {k: v.detach().to(torch.float32).contiguous().numpy().copy() for k, v in state.items()
              if hasattr(v, "detach")}
    out = pathlib.Path(args.out) if args.out else d / "model.safetensors"
    save_file(arrays, str(out), metadata={"format": "pt"})
    print(f"wrote {out} ({len(arrays)} tensors)")


if __name__ == "__main__":
    main()
