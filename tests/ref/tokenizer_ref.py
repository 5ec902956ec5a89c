"""Reference ids from Hugging Face `tokenizers` (pip install tokenizers) for autoq's tokenizer tests.

    python3 tests/ref/tokenizer_ref.py --shared ../shared --out tests/fixtures
Writes tokenizer_ref.json: for the real Qwen3 tokenizer and qwen3-tiny's own, the ids of a set of hard
strings, and calib200k_<name>.npy: the ids of the first 200 KB of calib.txt (int32).
"""
import argparse, json, os

import numpy as np
from tokenizers import Tokenizer

HARD = [
    "",
    "Hello, world!",
    "日本語のテキストと中文字符，한국어 텍스트。",
    "emoji 👍🏽 👩‍👩‍👧‍👦 🇯🇵🇫🇷 ❤️ 🏳️‍🌈",
    "combining: e\u0301 a\u0308 n\u0303 \u1100\u1161\u11a8 A\u030a \u212b",
    "contractions: I'LL WE'RE you're it's he'd they've I'M can't DON'T",
    "digits 1234567890123456789 3.14159 1e-10 0x1F",
    "whitespace    runs\t\ttabs\n\n\nnewlines\r\nCRLF \r\n  trailing   ",
    "control \x00\x01\x07\x1b[31m red \x7f end",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "special inside<|endoftext|>text<|endoftext|><|endoftext|>",
    "<|im_start|<|im_end|> broken <|im_start",
    "def f(x):\n    return x ** 2  # square\n",
    "ﬁ ligature ＦＵＬＬ width ½ ² ℌ",
    "\u00a0nbsp\u2003em\u3000ideographic space",
    "tab\tand\u000bvertical\u000cform",
    "mixed Ünïcödé Straße ΑΒΓ абв",
    "'s 'S 'll 'LL 're 'RE 've 'VE 'm 'M 'd 'D 't 'T",
    "a" * 300,
    " " * 50 + "x",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    toks = {"qwen3": os.path.join(args.shared, "data/qwen3-tokenizer/tokenizer.json"),
            "tiny": os.path.join(args.shared, "models/qwen3-tiny/tokenizer.json")}
    raw = open(os.path.join(args.shared, "data/calib.txt"), "rb").read()[:200000]
    calib = raw.decode("utf-8", errors="ignore")  # cut on a character boundary
    out = {"hard": HARD, "ids": {}, "calib_bytes": len(calib.encode("utf-8"))}
    for name, p in toks.items():
        t = Tokenizer.from_file(p)
        out["ids"][name] = [t.encode(s).ids for s in HARD]
        np.save(os.path.join(args.out, f"calib200k_{name}.npy"), np.array(t.encode(calib).ids, dtype=np.int32)[None, :])
    json.dump(out, open(os.path.join(args.out, "tokenizer_ref.json"), "w"), ensure_ascii=True)
    print({k: len(v) for k, v in out["ids"].items()}, out["calib_bytes"])


if __name__ == "__main__":
    main()
