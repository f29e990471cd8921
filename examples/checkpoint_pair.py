"""`python -m examples.checkpoint_pair OUT_DIR`: two checkpoints of one small GPT-NeoX, a pair to diff offline."""

from __future__ import annotations

import argparse

from infra.lm.checkpoint_pair import make_checkpoint_pair
from infra.lm.tokens import BUILTIN_PYDOC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--tokenizer", default="smollm2-135m")
    parser.add_argument("--text", default=BUILTIN_PYDOC)
    parser.add_argument("--early", type=int, default=20)
    parser.add_argument("--late", type=int, default=120)
    args = parser.parse_args()
    print(*make_checkpoint_pair(args.out_dir, args.tokenizer, args.text, args.early, args.late))


if __name__ == "__main__":
    main()
